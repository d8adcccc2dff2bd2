import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Names the calling thread where the kernel keeps it (/proc/thread-self/comm):
/// what `top -H`, perf and /proc/<pid>/task/<tid>/comm show, and what the tests look
/// threads up by. At most 15 bytes are kept.
///
/// Why not `Thread.current.name = …` from inside the thread: Foundation hands the
/// name to the kernel through the pthread handle that `Thread.start()` stores only
/// after pthread_create returns, so a new thread that runs first names nothing. In a
/// test of 3,000 threads, 26–60 kept the name they inherited; under a loaded CI run
/// that was once the daemon's write-back thread.
public func nameCurrentThread(_ name: String) {
    let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return }
    defer { close(fd) }
    let bytes = Array(name.utf8.prefix(15))
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
}
