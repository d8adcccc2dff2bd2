// swift-tools-version:6.0
// Hearth: a Kubernetes CSI driver and scheduler extender on an object store.
// One module per concern; C appears only in the system-library targets (CGRPC, CFuse).
import PackageDescription

let package = Package(
    name: "Hearth",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "hearth", targets: ["hearth"]),
        .executable(name: "hearth-bench", targets: ["hearth-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    ],
    targets: [
        // The gRPC C core from Debian's libgrpc-dev. Libraries are named in the
        // modulemap: pkg-config would expand abseil into ~15,000 link flags.
        .systemLibrary(name: "CGRPC", path: "Sources/CGRPC"),
        // libfuse3 mounts and unmounts; the kernel protocol is spoken in Swift.
        .systemLibrary(name: "CFuse", path: "Sources/CFuse"),

        // async/await gRPC server and client over the C core.
        .target(
            name: "HearthRPC",
            dependencies: [
                "CGRPC", "HearthMounts",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]),
        // swift-protobuf code generated from proto/csi.proto (see proto/generate.sh).
        .target(
            name: "CSIProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        // Content-addressed volumes and records on a directory or an S3 bucket.
        .target(
            name: "HearthStore",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The mount table and bind mounts (node publish, stale-mount clean-up).
        .target(name: "HearthMounts"),
        // The CSI services (Identity, Controller, Node) over HearthRPC.
        .target(
            name: "HearthCSI",
            dependencies: [
                "HearthRPC", "CSIProto", "HearthStore", "HearthMounts",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The FUSE kernel protocol (to 7.45), the session and its worker pool.
        .target(name: "HearthFUSE", dependencies: ["CFuse", "HearthMounts"]),
        // The node cache: sparse files per file version, chunk presence, LRU.
        .target(name: "HearthCache", dependencies: ["HearthStore", "CFuse"]),
        // One volume served over FUSE: namespace, inode table, write-back.
        .target(name: "HearthFS", dependencies: ["HearthFUSE", "HearthCache", "HearthStore", "HearthMounts"]),
        // Prometheus /metrics of the CSI plugins: gRPC calls, daemons, FUSE.
        .target(
            name: "HearthMetrics",
            dependencies: [
                "HearthRPC",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // What a node caches, and the reporter `hearth node` uses to tell the extender.
        .target(
            name: "HearthInventory",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The kube-scheduler extender (filter + prioritize by cached bytes) and inventory endpoint.
        .target(
            name: "HearthScheduler",
            dependencies: [
                "HearthInventory", "HearthStore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "hearth",
            dependencies: [
                "HearthRPC", "HearthCSI", "HearthStore", "HearthFS", "HearthFUSE", "HearthCache",
                "HearthScheduler", "HearthInventory", "HearthMetrics", "HearthMounts",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "hearth-bench",
            dependencies: [
                "HearthRPC", "HearthCSI", "CSIProto", "HearthStore", "HearthScheduler", "HearthInventory",
                // fio's verify job and the statfs pause probe, as the tests run them.
                "HearthTestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        // What the FS and E2E tests and the benchmarks share: background
        // commands, fio's verify job, the statfs pause probe.
        .target(name: "HearthTestSupport", path: "Tests/HearthTestSupport"),
        .testTarget(name: "HearthRPCTests", dependencies: ["HearthRPC", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "HearthCSITests", dependencies: ["HearthCSI", "HearthRPC", "CSIProto", "HearthStore"]),
        // Runs the built `hearth` binary: controller and node processes, real FUSE mounts.
        .testTarget(name: "HearthE2ETests", dependencies: ["HearthRPC", "CSIProto", "hearth", "HearthMounts", "HearthTestSupport"]),
        .testTarget(name: "HearthStoreTests", dependencies: ["HearthStore"]),
        .testTarget(
            name: "HearthFSTests",
            dependencies: [
                "HearthFS", "HearthFUSE", "HearthCache", "HearthStore",
                // TakeoverTests run daemons under the node plugin's supervisor and fd keeper.
                "HearthCSI", .product(name: "Logging", package: "swift-log"), "HearthTestSupport",
            ]),
        .testTarget(
            name: "HearthSchedulerTests",
            dependencies: [
                "HearthScheduler", "HearthInventory", "HearthStore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]),
    ]
)

// CI builds the RPC layer twice more, in release and under AddressSanitizer,
// because memory bugs at the C boundary hide in debug builds.
// HEARTH_PACKAGE_SUBSET=rpc trims the package to that layer so those two
// builds skip the heavy dependencies (unused ones are resolved, never built).
if Context.environment["HEARTH_PACKAGE_SUBSET"] == "rpc" {
    let keep: Set<String> = ["CGRPC", "HearthMounts", "HearthRPC", "HearthRPCTests"]
    package.targets = package.targets.filter { keep.contains($0.name) }
    package.products = []
}

// HEARTH_ONLY_TESTS=HearthCSITests,HearthE2ETests keeps only those test
// targets: for iterating on one area while another's tests are mid-change.
if let only = Context.environment["HEARTH_ONLY_TESTS"] {
    let keep = Set(only.split(separator: ",").map(String.init))
    package.targets.removeAll { $0.type == .test && !keep.contains($0.name) }
}
