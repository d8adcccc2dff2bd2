import CFuse
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where a request's reply goes: written to the /dev/fuse fd it was read from, or
/// left in its io_uring entry for the COMMIT_AND_FETCH that sends it.
enum ReplyChannel {
    case device(Int32)
    case ring(RingEntry)
}

/// One FUSE ring entry's buffers (owned by the thread that serves the entry).
struct RingEntry {
    let header: UnsafeMutableRawPointer
    let payload: UnsafeMutableRawBufferPointer

    /// The out-header goes where the in-header was, the body into the payload
    /// buffer. A READ's body may already be there (the payload is its scratch).
    func reply(unique: UInt64, error: Int32, body: UnsafeRawBufferPointer) {
        let n = error == 0 ? min(body.count, payload.count) : 0
        if n > 0, let source = body.baseAddress, let target = payload.baseAddress, source != UnsafeRawPointer(target) {
            memmove(target, source, n)
        }
        header.storeBytes(of: UInt32(FuseLayout.outHeader + n), toByteOffset: 0, as: UInt32.self)
        header.storeBytes(of: error == 0 ? 0 : -error, toByteOffset: 4, as: Int32.self)
        header.storeBytes(of: unique, toByteOffset: 8, as: UInt64.self)
        header.storeBytes(of: UInt32(n), toByteOffset: UringLayout.payloadSizeOffset, as: UInt32.self)
    }
}

/// One io_uring of a serving thread.
///
/// @unchecked Sendable: made on the thread that answers INIT and handed to exactly one
/// serving thread, which alone uses it from then on (never two threads at once).
final class OwnedRing: @unchecked Sendable {
    var ring = hearth_ring()

    /// Nil, with the errno logged, when this process cannot have a ring.
    init?() {
        let status = hearth_ring_init(&ring)
        guard status == 0 else {
            FileHandle.standardError.write(Data("hearth: io_uring_setup failed: \(String(cString: strerror(-status)))\n".utf8))
            return nil
        }
    }

    deinit { hearth_ring_exit(&ring) }

    /// A ring for each queue, or nil if any cannot be made.
    static func forEveryQueue() -> [OwnedRing]? {
        var rings: [OwnedRing] = []
        for _ in 0..<FuseSession.possibleCPUs() {
            guard let ring = OwnedRing() else { return nil }
            rings.append(ring)
        }
        return rings
    }
}

/// FUSE over io_uring (``SessionOptions/ioUring``). The kernel queues each request on
/// the ring queue of the CPU its caller runs on, so a queue's thread, pinned to that
/// CPU, is woken where the caller sleeps: no wake-up crosses CPUs, which on this
/// machine's VM is most of a /dev/fuse round trip (docs/fuse.md). Reply and next
/// fetch are one `io_uring_enter`.
///
/// Each thread owns one ring with one FUSE entry; a queue starts with one thread and
/// gets another whenever all of its threads are busy (a handler waiting on the store
/// must not hold up its CPU's other callers), up to ``ringThreadsPerQueue``.
/// FORGET and INTERRUPT still come through /dev/fuse, as do requests sent before
/// every queue has an entry, so the /dev/fuse workers keep running.
///
/// Not for a session an fd keeper guards: after a daemon's death, FUSE_NOTIFY_RESEND
/// requeues only what was read from /dev/fuse (fs/fuse/dev.c `fuse_resend`), so
/// requests the dead daemon held in ring entries would never be answered.
extension FuseSession {
    /// Threads per ring queue at most.
    var ringThreadsPerQueue: Int { max(2, options.maxWorkers / max(1, pool.withLock { $0.ringThreads.count })) }

    /// Requests served over io_uring so far.
    public var requestsOverRing: UInt64 { ringRequests.load(ordering: .relaxed) }

    /// The kernel makes one queue per possible CPU (`num_possible_cpus`), and is
    /// ready only once every queue has an entry.
    static func possibleCPUs() -> Int {
        guard let text = try? String(contentsOfFile: "/sys/devices/system/cpu/possible", encoding: .utf8) else {
            return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_CONF))))
        }
        // "0-1", "0", "0-3,6-7": the highest CPU number plus one.
        let highest = text.split(whereSeparator: { $0 == "," || $0 == "-" || $0 == "\n" }).compactMap { Int($0) }.max()
        return (highest ?? 0) + 1
    }

    /// Starts a thread per queue on `rings`, made before INIT was answered. (A
    /// session taken over from a keeper never has rings: `hearth mount` refuses
    /// `--io-uring` with one.)
    func startRingQueues(_ parameters: SessionParameters, rings: [OwnedRing]) {
        pool.withLock {
            $0.ringThreads = Array(repeating: 0, count: rings.count)
            $0.ringIdle = Array(repeating: 0, count: rings.count)
        }
        for (queue, ring) in rings.enumerated() { spawnRingThread(queue: queue, parameters, ring: ring) }
    }

    /// `ring`: nil for a thread added to a busy queue, which makes its own.
    private func spawnRingThread(queue: Int, _ parameters: SessionParameters, ring: OwnedRing? = nil) {
        pool.withLock {
            $0.workers += 1
            $0.ringThreads[queue] += 1
            $0.ringIdle[queue] += 1
        }
        let thread = Thread { [self] in
            if let owned = ring ?? OwnedRing() { serveRing(queue: queue, parameters, on: owned) }
            workerExited {
                $0.ringThreads[queue] -= 1
                $0.ringIdle[queue] -= 1
            }
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    private func serveRing(queue: Int, _ parameters: SessionParameters, on owned: OwnedRing) {
        _ = hearth_pin_to_cpu(Int32(queue))
        let payloadSize = max(UringLayout.minimumPayload, Int(parameters.maxWrite), Int(parameters.maxPages) * 4096)
        // Owned by this thread for its whole life; freed on exit.
        let header = UnsafeMutableRawPointer.allocate(byteCount: UringLayout.headerSize, alignment: 64)
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: payloadSize, alignment: 4096)
        let request = UnsafeMutableRawBufferPointer.allocate(byteCount: payloadSize + 2 * UringLayout.headerSize, alignment: 16)
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 2)
        defer {
            header.deallocate()
            payload.deallocate()
            request.deallocate()
            iov.deallocate()
        }
        iov[0] = iovec(iov_base: header, iov_len: UringLayout.headerSize)
        iov[1] = iovec(iov_base: payload.baseAddress, iov_len: payloadSize)
        let entry = RingEntry(header: header, payload: payload)
        let setxattrExt = parameters.has(FuseInitFlag.setxattrExt)
        var command = UInt32(HEARTH_FUSE_URING_REGISTER)
        var commitID: UInt64 = 0
        let threadLimit = ringThreadsPerQueue
        while true {
            let result = hearth_ring_fuse_cmd(&owned.ring, fd, command, UInt16(queue), commitID, iov)
            guard result == 0 else {
                // ENOTCONN / ECONNABORTED: unmounted or aborted; the entry is gone.
                if result != -ENOTCONN && result != -ECONNABORTED && result != -ECANCELED {
                    FileHandle.standardError.write(Data("hearth: io_uring queue \(queue): \(String(cString: strerror(-result)))\n".utf8))
                }
                return
            }
            command = UInt32(HEARTH_FUSE_URING_COMMIT_AND_FETCH)
            commitID = header.loadUnaligned(fromByteOffset: UringLayout.commitIDOffset, as: UInt64.self)
            let unique = header.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            let spawn = pool.withLock { pool in
                pool.ringIdle[queue] -= 1
                return pool.ringIdle[queue] == 0 && !pool.stopped && pool.ringThreads[queue] < threadLimit
            }
            if spawn { spawnRingThread(queue: queue, parameters) }
            let length = UringLayout.assemble(header: header, payload: UnsafeRawPointer(payload.baseAddress!),
                                              into: request, setxattrExt: setxattrExt)
            // Answered EIO unless the handler replies (every ring request has a reply).
            entry.reply(unique: unique, error: EIO, body: UnsafeRawBufferPointer(start: nil, count: 0))
            if let length {
                handle(UnsafeRawBufferPointer(rebasing: request[0..<length]), channel: .ring(entry), scratch: payload)
            }
            ringRequests.add(1, ordering: .relaxed)
            pool.withLock { $0.ringIdle[queue] += 1 }
        }
    }
}
