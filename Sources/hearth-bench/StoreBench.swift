import ArgumentParser
import Foundation
import HearthStore

#if canImport(Glibc)
import Glibc
#endif

/// `hearth-bench store`: writes and reads a large file through the store (chunking,
/// hashing, one object per chunk, fsync or HTTP per object) and moves the same bytes
/// with a plain tool against the same backend in the same run — `cp` (+ `sync`) for a
/// directory, boto3 for S3 — and prints the ratio. The issue's target is ≥ 0.8.
///
/// For S3 give `--store s3://bucket/prefix --s3-endpoint URL`; credentials from the
/// environment. Do not publish numbers measured on moto (DESIGN.md): it is a
/// functional fake, far slower than any real engine.
struct StoreBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Store write/read throughput vs cp (directory) or boto3 (S3) on the same backend.")

    @Option(help: "Bytes to move, e.g. 1GiB, 256MiB.")
    var size: String = "1GiB"

    @Option(help: "file:///path or s3://bucket/prefix (default: a fresh directory under --work-dir).")
    var store: String?

    @Option(help: "Scratch directory for the source file and the cp copies (default: /var/tmp).")
    var workDir: String = "/var/tmp"

    @Option(name: .customLong("s3-endpoint"), help: "S3 endpoint URL.")
    var s3Endpoint: String?

    @Option(name: .customLong("s3-region"))
    var s3Region: String = "us-east-1"

    @Option(help: "Chunk uploads/downloads in flight.")
    var parallelism: Int = 8

    @Option(help: "Chunk size in bytes.")
    var chunkSize: Int = Manifest.defaultChunkSize

    func run() async throws {
        let bytes = try Self.parseSize(size)
        let scratch = "\(workDir)/hearth-store-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let source = "\(scratch)/source"
        FileHandle.standardError.write(Data("generating \(bytes) bytes of incompressible data…\n".utf8))
        try Self.generate(path: source, bytes: bytes)

        let location = try store.map { try StoreLocation($0) } ?? .directory("\(scratch)/store")
        let objects: any ObjectStore
        var template: S3Configuration? = nil
        if case .s3 = location {
            guard let credentials = S3Credentials.fromEnvironment() else {
                throw ValidationError("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for an s3:// store")
            }
            template = S3Configuration(bucket: "placeholder", endpoint: s3Endpoint.flatMap(URL.init(string:)),
                                       region: s3Region, pathStyle: true, credentials: credentials)
        }
        objects = try location.open(s3: template)
        let content = ContentStore(objects)

        // Store: write.
        let writer = try FileWriter(content: content, chunkSize: chunkSize, parallelism: parallelism)
        var start = ContinuousClock.now
        let manifest = try await writer.write(contentsOf: source)
        try await objects.flush()  // durable, as cp + sync is
        let storeWrite = ContinuousClock.now - start

        // Store: read back (every chunk fetched and verified) into /dev/null.
        let sink = open("/dev/null", O_WRONLY)
        defer { close(sink) }
        let reader = VolumeReader(content: content, root: try await content.putTree(.empty), parallelism: parallelism)
        start = ContinuousClock.now
        var readBytes: Int64 = 0
        try await reader.forEachChunk(of: manifest) { _, chunk in
            readBytes += Int64(chunk.count)
            _ = chunk.withUnsafeBytes { write(sink, $0.baseAddress, $0.count) }
        }
        let storeRead = ContinuousClock.now - start
        guard readBytes == bytes else { throw ValidationError("read \(readBytes) bytes, wrote \(bytes)") }

        // Plain tool, same backend, same run.
        let plainWrite: Duration
        let plainRead: Duration
        let tool: String
        switch location {
        case .directory(let root):
            tool = "cp"
            let target = "\(root)/plain-copy"
            start = ContinuousClock.now
            try Self.shell(["cp", source, target])
            try Self.shell(["sync", "-f", target])  // the store fsyncs; so must the baseline
            plainWrite = ContinuousClock.now - start
            start = ContinuousClock.now
            try Self.shell(["cp", target, "/dev/null"])
            plainRead = ContinuousClock.now - start
        case .s3(let bucket, let prefix):
            tool = "boto3"
            let script = """
                import boto3, sys, time
                s3 = boto3.client("s3", endpoint_url=sys.argv[1] or None, region_name=sys.argv[2])
                t = time.monotonic(); s3.upload_file(sys.argv[3], sys.argv[4], sys.argv[5]); w = time.monotonic() - t
                t = time.monotonic(); s3.download_file(sys.argv[4], sys.argv[5], "/dev/null"); r = time.monotonic() - t
                s3.delete_object(Bucket=sys.argv[4], Key=sys.argv[5])
                print(w, r)
                """
            let output = try Self.shell(["python3", "-c", script, s3Endpoint ?? "", s3Region, source, bucket, prefix + "bench/plain"])
            let numbers = output.split(separator: " ").compactMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            guard numbers.count == 2 else { throw ValidationError("boto3 run failed: \(output)") }
            plainWrite = .milliseconds(Int64(numbers[0] * 1000))
            plainRead = .milliseconds(Int64(numbers[1] * 1000))
        }

        func rate(_ d: Duration) -> Double {
            Double(bytes) / 1_048_576 / (Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
        }
        print("store benchmark: \(Self.human(bytes)) via \(location), chunk \(chunkSize) B, parallelism \(parallelism)")
        print("operation   store MiB/s   \(tool.padding(toLength: 6, withPad: " ", startingAt: 0)) MiB/s   ratio")
        for (name, ours, theirs) in [("write", storeWrite, plainWrite), ("read", storeRead, plainRead)] {
            let line = String(format: "%-10@ %11.1f %12.1f %7.2f", name, rate(ours), rate(theirs), rate(ours) / rate(theirs))
            print(line)
        }
    }

    static func parseSize(_ text: String) throws -> Int64 {
        let units: [(String, Int64)] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("G", 1 << 30), ("M", 1 << 20)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            if let n = Int64(text.dropLast(suffix.count)) { return n * factor }
        }
        guard let n = Int64(text) else { throw ValidationError("bad size \(text)") }
        return n
    }

    static func human(_ bytes: Int64) -> String {
        bytes >= 1 << 30 ? "\(bytes >> 30) GiB" : "\(bytes >> 20) MiB"
    }

    /// Fast xorshift data: incompressible and never deduplicated, so the store does
    /// all its work.
    static func generate(path: String, bytes: Int64) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw ValidationError("cannot create \(path)") }
        defer { close(fd) }
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        let words = 1 << 20
        var buffer = [UInt64](repeating: 0, count: words)
        var written: Int64 = 0
        while written < bytes {
            for i in 0..<words {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                buffer[i] = state
            }
            let count = Int(min(Int64(words * 8), bytes - written))
            let n = buffer.withUnsafeBytes { write(fd, $0.baseAddress, count) }
            guard n == count else { throw ValidationError("short write to \(path)") }
            written += Int64(n)
        }
        fsync(fd)
    }

    @discardableResult
    static func shell(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("\(arguments.joined(separator: " ")) exited with \(process.terminationStatus)")
        }
        return String(decoding: output, as: UTF8.self)
    }
}
