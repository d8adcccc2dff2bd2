import Foundation

/// What a mark phase found reachable from the roots.
public struct Reachable: Sendable {
    public var trees: Set<ContentHash> = []
    public var manifests: Set<ContentHash> = []
    public var chunks: Set<ContentHash> = []
    /// Objects that could not be read during the walk (only collected when the walk
    /// is asked to continue past errors, as `hearth store check` does).
    public var problems: [String] = []

    func contains(_ kind: ObjectKind, _ hash: ContentHash) -> Bool {
        switch kind {
        case .tree: trees.contains(hash)
        case .manifest: manifests.contains(hash)
        case .chunk: chunks.contains(hash)
        }
    }
}

/// Progress of a long run, for a person watching stderr.
public struct MaintenanceProgress: Sendable {
    public var phase: String
    public var done: Int
}

/// Walks everything reachable from every volume head and every snapshot root.
///
/// Shared by the garbage collector (which must stop at the first unreadable object:
/// an incomplete mark would let the sweep delete live data) and the checker (which
/// keeps going and reports every problem).
struct Marker: Sendable {
    let objects: any ObjectStore
    let content: ContentStore
    let parallelism: Int
    let progress: @Sendable (MaintenanceProgress) -> Void

    /// Root tree hashes of all volume heads and snapshots.
    func roots() async throws -> [ContentHash] {
        var roots: [ContentHash] = []
        for info in try await objects.listAll(prefix: "volumes/") where info.key.hasSuffix("/head") {
            let id = String(info.key.dropFirst("volumes/".count).dropLast("/head".count))
            do {
                roots.append(try await VolumeHeads(objects).read(id).head.rootHash!)
            } catch StoreError.notFound {
                continue  // volume deleted since the listing
            }
        }
        for info in try await objects.listAll(prefix: Records.snapshotPrefix) {
            do {
                let record = try Records.decode(SnapshotRecord.self, try await objects.get(info.key), key: info.key)
                guard let root = record.rootHash else { throw StoreError.corrupt(key: info.key, reason: "bad root hash") }
                roots.append(root)
            } catch StoreError.notFound {
                continue
            }
        }
        return roots
    }

    /// Marks trees and manifests (fetching and verifying each) and collects chunk
    /// hashes. With `continueOnError` unreadable objects are recorded and skipped.
    func mark(from roots: [ContentHash], continueOnError: Bool) async throws -> Reachable {
        var reachable = Reachable()
        var pendingTrees = Array(Set(roots))
        var pendingManifests: [ContentHash] = []
        for root in pendingTrees { reachable.trees.insert(root) }
        while !pendingTrees.isEmpty || !pendingManifests.isEmpty {
            let trees = pendingTrees
            let manifests = pendingManifests
            pendingTrees = []
            pendingManifests = []
            let fetched = try await fetchAll(trees: trees, manifests: manifests, continueOnError: continueOnError)
            reachable.problems += fetched.problems
            for tree in fetched.trees {
                for entry in tree.entries {
                    guard let child = entry.child else { continue }
                    if entry.kind == .directory, reachable.trees.insert(child).inserted {
                        pendingTrees.append(child)
                    } else if entry.kind == .file, reachable.manifests.insert(child).inserted {
                        pendingManifests.append(child)
                    }
                }
            }
            for manifest in fetched.manifests {
                for chunk in manifest.chunks where !chunk.isZero { reachable.chunks.insert(chunk) }
            }
            progress(MaintenanceProgress(phase: "mark", done: reachable.trees.count + reachable.manifests.count))
        }
        return reachable
    }

    private struct Fetched: Sendable {
        var trees: [Tree] = []
        var manifests: [Manifest] = []
        var problems: [String] = []
    }

    private enum Item: Sendable {
        case tree(ContentHash), manifest(ContentHash)
    }

    private enum Fetch: Sendable {
        case tree(Tree), manifest(Manifest), problem(String)
    }

    private func fetchAll(trees: [ContentHash], manifests: [ContentHash], continueOnError: Bool) async throws -> Fetched {
        let items = trees.map(Item.tree) + manifests.map(Item.manifest)
        let content = self.content
        var fetched = Fetched()
        try await forEachConcurrently(items, limit: parallelism, { item -> Fetch in
            do {
                switch item {
                case .tree(let hash): return .tree(try await content.tree(hash))
                case .manifest(let hash): return .manifest(try await content.manifest(hash))
                }
            } catch let error as StoreError where continueOnError {
                return .problem(error.description)
            }
        }, collect: { result in
            switch result {
            case .tree(let tree): fetched.trees.append(tree)
            case .manifest(let manifest): fetched.manifests.append(manifest)
            case .problem(let problem): fetched.problems.append(problem)
            }
        })
        return fetched
    }
}

/// Outcome of a garbage collection.
public struct GCReport: Sendable, Codable {
    public var roots = 0
    public var reachableObjects = 0
    public var reachableBytes: Int64 = 0
    /// Unreferenced but younger than the grace period: possibly being written now.
    public var youngObjects = 0
    public var deletedObjects = 0
    public var deletedBytes: Int64 = 0
    public var dryRun = false
}

/// Mark and sweep over content-addressed objects.
///
/// Mark: everything reachable from every volume head and snapshot root. Sweep:
/// delete chunks, manifests and trees that are not marked **and** older than the
/// grace period. Writers upload chunks, then manifests and trees, then commit the
/// head, all within seconds; anything they write during a collection is younger
/// than the grace cutoff and survives, so collection is safe while volumes are being
/// written. See docs/store.md for the one remaining race (re-using an old
/// unreferenced object) and how it is bounded.
public struct GarbageCollector: Sendable {
    public let objects: any ObjectStore
    public var grace: Duration
    public var dryRun: Bool
    public var parallelism: Int
    public var progress: @Sendable (MaintenanceProgress) -> Void

    public init(_ objects: any ObjectStore, grace: Duration = .seconds(3600), dryRun: Bool = false, parallelism: Int = 16,
                progress: @escaping @Sendable (MaintenanceProgress) -> Void = { _ in }) {
        self.objects = objects
        self.grace = grace
        self.dryRun = dryRun
        self.parallelism = max(1, parallelism)
        self.progress = progress
    }

    public func run() async throws -> GCReport {
        // The cutoff is taken before marking: objects written after it are young.
        let graceSeconds = Double(grace.components.seconds) + Double(grace.components.attoseconds) / 1e18
        let cutoff = Date().addingTimeInterval(-graceSeconds)
        let marker = Marker(objects: objects, content: ContentStore(objects), parallelism: parallelism, progress: progress)
        let roots = try await marker.roots()
        let reachable = try await marker.mark(from: roots, continueOnError: false)
        var report = GCReport()
        report.roots = roots.count
        report.dryRun = dryRun
        var doomed: [ObjectInfo] = []
        for kind in ObjectKind.allCases {
            var token: String? = nil
            repeat {
                let page = try await objects.list(prefix: kind.rawValue + "/", startAfter: nil, continuationToken: token, limit: 1000)
                token = page.nextContinuationToken
                for info in page.objects {
                    guard let hash = kind.hash(fromKey: info.key) else { continue }
                    if reachable.contains(kind, hash) {
                        report.reachableObjects += 1
                        report.reachableBytes += info.size
                    } else if info.lastModified > cutoff {
                        report.youngObjects += 1
                    } else {
                        doomed.append(info)
                    }
                }
                progress(MaintenanceProgress(phase: "sweep \(kind.rawValue)", done: report.reachableObjects + doomed.count))
            } while token != nil
        }
        // Heads that moved while we listed may reach objects that looked
        // unreachable: mark from the new roots and spare what they reach.
        let newRoots = Set(try await marker.roots()).subtracting(roots)
        if !newRoots.isEmpty {
            let late = try await marker.mark(from: Array(newRoots), continueOnError: false)
            doomed.removeAll { info in
                ObjectKind.allCases.contains { kind in
                    info.key.hasPrefix(kind.rawValue + "/") && kind.hash(fromKey: info.key).map { late.contains(kind, $0) } == true
                }
            }
        }
        if dryRun {
            report.deletedObjects = doomed.count
            report.deletedBytes = doomed.reduce(0) { $0 + $1.size }
        } else {
            let deleted = try await delete(doomed, cutoff: cutoff)
            report.deletedObjects = deleted.count
            report.deletedBytes = deleted.reduce(0) { $0 + $1.size }
            report.youngObjects += doomed.count - deleted.count
        }
        return report
    }

    /// Deletes what is still stale when its turn comes (a writer may have
    /// freshened it since the listing); returns what was deleted.
    private func delete(_ doomed: [ObjectInfo], cutoff: Date) async throws -> [ObjectInfo] {
        let objects = self.objects
        var done = 0
        var deleted: [ObjectInfo] = []
        try await forEachConcurrently(doomed, limit: parallelism, { info in
            try await objects.deleteIfStale(info.key, cutoff: cutoff) ? info : nil
        }, collect: { outcome in
            if let outcome { deleted.append(outcome) }
            done += 1
            if done % 1000 == 0 { progress(MaintenanceProgress(phase: "delete", done: done)) }
        })
        return deleted
    }
}

/// Outcome of `hearth store check`.
public struct CheckReport: Sendable, Codable {
    public var roots = 0
    public var trees = 0
    public var manifests = 0
    public var chunks = 0
    public var bytesVerified: Int64 = 0
    public var problems: [String] = []
}

/// Verifies every reachable object: trees and manifests decode and match their
/// hashes, every chunk exists and matches its hash. Reports all problems found.
public struct StoreChecker: Sendable {
    public let objects: any ObjectStore
    public var parallelism: Int
    public var progress: @Sendable (MaintenanceProgress) -> Void

    public init(_ objects: any ObjectStore, parallelism: Int = 16,
                progress: @escaping @Sendable (MaintenanceProgress) -> Void = { _ in }) {
        self.objects = objects
        self.parallelism = max(1, parallelism)
        self.progress = progress
    }

    public func run() async throws -> CheckReport {
        let content = ContentStore(objects)
        let marker = Marker(objects: objects, content: content, parallelism: parallelism, progress: progress)
        let roots = try await marker.roots()
        let reachable = try await marker.mark(from: roots, continueOnError: true)
        var report = CheckReport(roots: roots.count, trees: reachable.trees.count, manifests: reachable.manifests.count,
                                 chunks: reachable.chunks.count, problems: reachable.problems)
        let chunks = Array(reachable.chunks)
        var done = 0
        try await forEachConcurrently(chunks, limit: parallelism, { hash -> (Int64, String?) in
            do {
                return (Int64(try await content.get(.chunk, hash).count), nil)
            } catch let error as StoreError {
                return (0, error.description)
            }
        }, collect: { result in
            report.bytesVerified += result.0
            if let problem = result.1 { report.problems.append(problem) }
            done += 1
            if done % 256 == 0 { progress(MaintenanceProgress(phase: "verify chunks", done: done)) }
        })
        return report
    }
}
