import ArgumentParser
import Foundation
import HearthCache
import HearthInventory
import HearthMounts
import HearthStore
import Logging

/// Flags of the node's inventory reports to the scheduler extender (`hearth node`,
/// `hearth serve`). Without `--inventory-url` nothing is reported.
struct InventoryOptions: ParsableArguments {
    @Option(name: .customLong("inventory-url"),
            help: "The scheduler extender's inventory base URL, e.g. http://hearth-scheduler.kube-system.svc:8889 (no reports without it).")
    var inventoryURL: String?

    @Option(name: .customLong("inventory-token-file"),
            help: "File holding the shared inventory token (a mounted Secret; re-read for every report).")
    var inventoryTokenFile: String = "/var/run/secrets/hearth/inventory-token"

    @Option(name: .customLong("inventory-interval"),
            help: "Report at least this often, e.g. 30s (also soon after a volume is staged or unstaged).")
    var inventoryInterval: String = "30s"

    func validate() throws {
        if let inventoryURL {
            guard let url = URL(string: inventoryURL), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
                throw ValidationError("--inventory-url must be an http(s) URL, e.g. http://hearth-scheduler.kube-system.svc:8889")
            }
        }
        _ = try Console.parseDuration(inventoryInterval)
    }

    /// `POST` target: the base URL with `/inventory`, unless it already ends so.
    var endpoint: String? {
        guard var base = inventoryURL else { return nil }
        while base.hasSuffix("/") { base.removeLast() }
        return base.hasSuffix("/inventory") ? base : base + "/inventory"
    }

    /// Starts reporting in the background (nil without `--inventory-url`); cancel
    /// the task to stop. The token is read from its file for every report and never
    /// logged.
    func start(node: NodeOptions, occupancy: CacheOccupancy, logger: Logger) throws -> Task<Void, Never>? {
        guard let endpoint else { return nil }
        let roots = node.allowedPath.isEmpty ? ["/var/lib/kubelet"] : node.allowedPath
        let inventory = NodeInventory(
            occupancy: occupancy,
            stagedVolumes: { StagedVolumes.current(under: roots) },
            knownFile: node.dataDir + "/run/inventory-volumes", logger: logger)
        let reporter = InventoryReporter(
            endpoint: endpoint, node: node.resolvedNodeID, token: InventoryReporter.tokenFile(inventoryTokenFile),
            interval: try Console.parseDuration(inventoryInterval), logger: logger,
            snapshot: { await inventory.snapshot() })
        if !FileManager.default.fileExists(atPath: inventoryTokenFile) {
            logger.warning("no inventory token file at \(inventoryTokenFile): the extender will refuse reports until it appears")
        }
        logger.info("reporting cached volumes to \(endpoint) every \(inventoryInterval) and on change")
        return Task {
            // Stage and unstage show in the mount table: a report follows within a second.
            let watcher = Task {
                var last = StagedVolumes.current(under: roots)
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    let now = StagedVolumes.current(under: roots)
                    if now != last { reporter.noteChange() }
                    last = now
                }
            }
            await reporter.run()
            watcher.cancel()
        }
    }
}

/// The volumes this node serves right now, from the kernel's mount table: every
/// mount whose source is `hearth:<volume>` under the node's allowed paths (the
/// staging mount and its bind mounts into pods). The mount table rather than the
/// daemon supervisor, because it also shows mounts from before a node plugin
/// restart and is what kubelet and pods actually use.
enum StagedVolumes {
    /// Volume id → true when some mount of it is writable (this node holds its
    /// writer lease).
    static func current(under roots: [String]) -> [String: Bool] {
        var volumes: [String: Bool] = [:]
        for entry in MountTable.entries() where entry.source.hasPrefix("hearth:") {
            guard roots.contains(where: { entry.mountPoint == $0 || entry.mountPoint.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") }) else {
                continue
            }
            let id = String(entry.source.dropFirst("hearth:".count))
            volumes[id] = (volumes[id] ?? false) || !entry.isReadOnly
        }
        return volumes
    }
}

/// What the node reports: the volumes it serves now, plus volumes it served before
/// whose bytes are still in its cache. The latter matter most: a pod that ended
/// left its data here, and the next pod on the same claim should come back to it.
/// Such a volume is reported until its cached bytes are evicted (0) or the volume
/// is deleted; the list of them is kept in a file so a restarted node plugin still
/// knows where its warm data came from.
actor NodeInventory {
    private let occupancy: CacheOccupancy
    private let stagedVolumes: @Sendable () -> [String: Bool]
    private let knownFile: String
    private let logger: Logger
    private var known: Set<String>
    /// The last good measurement of each volume, reported while the store is
    /// unreachable (soft state: slightly stale beats silent).
    private var last: [String: CacheOccupancy.Measurement] = [:]

    init(occupancy: CacheOccupancy, stagedVolumes: @escaping @Sendable () -> [String: Bool], knownFile: String, logger: Logger) {
        self.occupancy = occupancy
        self.stagedVolumes = stagedVolumes
        self.knownFile = knownFile
        self.logger = logger
        let text = (try? String(contentsOfFile: knownFile, encoding: .utf8)) ?? ""
        known = Set(text.split(whereSeparator: \.isNewline).map(String.init).filter { (try? Identifiers.validate($0)) != nil })
    }

    func snapshot() async -> [CachedVolume] {
        let staged = stagedVolumes()
        let before = known
        known.formUnion(staged.keys)
        var report: [CachedVolume] = []
        for id in known.sorted() {
            let writer = staged[id] ?? false
            let measured: CacheOccupancy.Measurement
            do {
                measured = try await occupancy.measure(id)
                last[id] = measured
            } catch StoreError.notFound {
                known.remove(id)  // deleted: nothing left to be near
                last[id] = nil
                continue
            } catch {
                logger.warning("cannot measure cached bytes of volume \(id): \(error)")
                guard let previous = last[id] else {
                    if staged[id] != nil { report.append(CachedVolume(volumeID: id, cachedBytes: 0, writer: writer)) }
                    continue
                }
                measured = previous
            }
            if staged[id] == nil && measured.cachedBytes == 0 {
                known.remove(id)  // evicted since it was unstaged
                last[id] = nil
                continue
            }
            report.append(CachedVolume(volumeID: id, cachedBytes: measured.cachedBytes,
                                       logicalBytes: measured.logicalBytes, writer: writer))
        }
        if known != before { persist() }
        return report
    }

    private func persist() {
        let text = known.sorted().map { $0 + "\n" }.joined()
        let directory = (knownFile as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try Data(text.utf8).write(to: URL(fileURLWithPath: knownFile), options: .atomic)
        } catch {
            logger.warning("cannot record the inventory's volume list in \(knownFile): \(error)")
        }
    }
}
