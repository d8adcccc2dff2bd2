import ArgumentParser
import Foundation
import HearthRPC

/// Unary latency and throughput of the Hearth gRPC server against a Python
/// grpcio server doing the same work (echo), both out of process, measured
/// with the same client in the same run.
struct RPCBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rpc", abstract: "Unary p50/p99 and calls/s: Hearth server vs grpcio server, same client.")

    @Option(help: "Calls per concurrency level.")
    var calls = 20_000

    @Option(help: "Request payload bytes.")
    var payload = 128

    @Option(help: "Python with grpcio installed.")
    var python = "python3"

    @Option(help: "Path of e2e/bench/grpcio_echo_server.py.")
    var grpcioServer = "e2e/bench/grpcio_echo_server.py"

    func run() async throws {
        let hearthPort = try freePort(), grpcioPort = try freePort()
        let hearth = try startServer([CommandLine.arguments[0], "rpc-server", "--address", "127.0.0.1:\(hearthPort)"])
        let grpcio = try startServer(["/usr/bin/env", python, grpcioServer, "127.0.0.1:\(grpcioPort)"])
        // SIGKILL: children of Foundation.Process inherit a signal mask that
        // blocks SIGTERM, so a Python server would ignore terminate().
        defer { for server in [hearth, grpcio] { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() } }
        let request = [UInt8](repeating: 7, count: payload)
        print("unary echo, \(payload)-byte payload, \(calls) calls per row; client: HearthRPC; servers out of process on 127.0.0.1")
        print(pad("concurrency", 12) + pad("server", 8) + pad("p50 µs", 10) + pad("p99 µs", 10) + pad("calls/s", 10) + "hearth/grpcio")
        for concurrency in [1, 16, 100] {
            var rows: [(String, Stats)] = []
            for (name, port) in [("hearth", hearthPort), ("grpcio", grpcioPort)] {
                let channel = RPCChannel(endpoint: .tcp(host: "127.0.0.1", port: port))
                _ = try await measure(channel, request, concurrency: concurrency, calls: min(calls, 1000))  // warm-up
                rows.append((name, try await measure(channel, request, concurrency: concurrency, calls: calls)))
                await channel.close()
            }
            for (name, stats) in rows {
                let ratio = name == "hearth" ? String(format: "%.2fx calls/s, p99 %.2fx", stats.rate / rows[1].1.rate, rows[1].1.p99 / stats.p99) : ""
                print(pad("\(concurrency)", 12) + pad(name, 8) + pad(String(format: "%.0f", stats.p50), 10)
                    + pad(String(format: "%.0f", stats.p99), 10) + pad(String(format: "%.0f", stats.rate), 10) + ratio)
            }
        }
    }

    struct Stats { var p50: Double; var p99: Double; var rate: Double }

    func measure(_ channel: RPCChannel, _ request: [UInt8], concurrency: Int, calls: Int) async throws -> Stats {
        let start = ContinuousClock.now
        let perWorker = calls / concurrency
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var mine: [Double] = []
                    mine.reserveCapacity(perWorker)
                    for _ in 0..<perWorker {
                        let t0 = ContinuousClock.now
                        _ = try await channel.unary("/bench.Echo/Echo", request, timeout: .seconds(30))
                        mine.append((ContinuousClock.now - t0).microseconds)
                    }
                    return mine
                }
            }
            var all: [Double] = []
            for try await part in group { all += part }
            return all.sorted()
        }
        let elapsed = (ContinuousClock.now - start).microseconds / 1e6
        return Stats(
            p50: latencies[latencies.count / 2], p99: latencies[Int(Double(latencies.count) * 0.99)],
            rate: Double(latencies.count) / elapsed)
    }

    func startServer(_ command: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        // Both servers print "ready" once listening.
        let line = pipe.fileHandleForReading.availableData
        guard String(decoding: line, as: UTF8.self).contains("ready") else {
            process.terminate()
            throw ValidationError("server \(command) did not start")
        }
        return process
    }
}

/// The Hearth side of the RPC benchmark: echo on a TCP address.
struct RPCBenchServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rpc-server", abstract: "Echo server for `rpc`.")

    @Option var address: String

    func run() async throws {
        var routes = RPCRoutes()
        routes.raw("/bench.Echo/Echo") { RPCServerResponse($0.message) }
        let server = try RPCServer(endpoints: [try RPCEndpoint(parsing: address)], handlers: routes.handlers)
        FileHandle.standardOutput.write(Data("ready\n".utf8))
        await server.waitUntilStopped()
    }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}

func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard ok else { throw ValidationError("no free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

extension Duration {
    var microseconds: Double {
        Double(components.seconds) * 1e6 + Double(components.attoseconds) / 1e12
    }
}
