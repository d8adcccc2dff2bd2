import HearthStore
import Logging

/// The decisions behind `filter` and `prioritize`, independent of HTTP: which of a
/// pod's claims are Hearth volumes, how much of them each node caches, and what that
/// means for the node (see ``Scoring`` for the rules).
public struct LocalityExtender: Sendable {
    public let inventory: InventoryStore
    public let resolver: any VolumeResolver
    public let leases: any LeaseSource
    public let metrics: SchedulerMetrics?
    public let logger: Logger

    public init(inventory: InventoryStore, resolver: any VolumeResolver, leases: any LeaseSource,
                metrics: SchedulerMetrics? = nil, logger: Logger = Logger(label: "hearth.scheduler")) {
        self.inventory = inventory
        self.resolver = resolver
        self.leases = leases
        self.metrics = metrics
        self.logger = logger
    }

    /// One of the pod's Hearth volumes.
    public struct PodVolume: Sendable, Hashable {
        public var claim: PodClaim
        public var volumeID: String
        public var logicalBytes: Int64?
        /// The pod mounts it writable (some reference to it is not `readOnly`).
        public var writer: Bool
    }

    /// The filter's verdict, by index into the candidate list.
    public struct FilterOutcome: Sendable {
        public var passed: [Int]
        /// Dropped, but a different cache state could change that (FailedNodes).
        public var failed: [String: String]
        /// Dropped whatever preemption does (FailedAndUnresolvableNodes).
        public var unresolvable: [String: String]
    }

    /// Scores every candidate 0...10. Pods without claims answer without any lookup.
    public func prioritize(pod: Pod, nodes: [String]) async -> [HostPriority] {
        let volumes = pod.claims.isEmpty ? [] : await hearthVolumes(of: pod)
        guard !volumes.isEmpty else { return nodes.map { HostPriority(host: $0, score: 0) } }
        let locality = locality(of: volumes, on: nodes)
        var priorities: [HostPriority] = []
        priorities.reserveCapacity(nodes.count)
        for (node, cached) in zip(nodes, locality.cachedBytes) {
            priorities.append(HostPriority(host: node, score: Scoring.score(cachedBytes: cached, totalBytes: locality.totalBytes)))
        }
        metrics?.scoresGiven(priorities)
        return priorities
    }

    /// Every node passes unless the pod writes a volume whose lease another node
    /// holds (unresolvable), or asks for hard locality the node cannot meet (failed).
    public func filter(pod: Pod, nodes: [String]) async -> FilterOutcome {
        var outcome = FilterOutcome(passed: [], failed: [:], unresolvable: [:])
        let requirement: LocalityRequirement?
        do {
            requirement = try LocalityRequirement.of(pod.metadata.annotations)
        } catch {
            // Failing every node puts the message in the pod's events; an Error answer
            // would be swallowed by `ignorable: true` and the pod placed anywhere.
            for node in nodes { outcome.unresolvable[node] = error.message }
            metrics?.filtered("annotation", count: nodes.count)
            return outcome
        }
        let volumes = pod.claims.isEmpty ? [] : await hearthVolumes(of: pod)
        guard !volumes.isEmpty else {
            outcome.passed = Array(nodes.indices)
            return outcome
        }
        var holders: [(volume: PodVolume, node: String)] = []
        for volume in volumes where volume.writer {
            do {
                if let holder = try await leases.writerLeaseHolder(volumeID: volume.volumeID) {
                    holders.append((volume, holder))
                }
            } catch {
                logger.warning("lease of \(volume.volumeID) unknown, not enforcing it: \(error)")
            }
        }
        let locality = requirement == nil ? nil : locality(of: volumes, on: nodes)
        for (index, node) in nodes.enumerated() {
            if let held = holders.first(where: { $0.node != node }) {
                outcome.unresolvable[node] = "volume \(held.volume.volumeID) (PVC \(held.volume.claim.namespace)/\(held.volume.claim.name)) "
                    + "is mounted writable by this pod and its single-writer lease is held by node \(held.node)"
                continue
            }
            if let requirement, let locality,
               !Scoring.meets(requirement.minimumShare, cachedBytes: locality.cachedBytes[index], totalBytes: locality.totalBytes) {
                let have = Scoring.percent(cachedBytes: locality.cachedBytes[index], totalBytes: locality.totalBytes)
                let want = Scoring.percent(cachedBytes: Int64((requirement.minimumShare * 1000).rounded()), totalBytes: 1000)
                outcome.failed[node] = "node caches \(have) of the pod's Hearth volume bytes; \(LocalityRequirement.annotation) asks for \(want)"
                continue
            }
            outcome.passed.append(index)
        }
        metrics?.filtered("lease", count: outcome.unresolvable.count)
        metrics?.filtered("locality", count: outcome.failed.count)
        return outcome
    }

    /// The pod's claims that are Hearth volumes, resolved concurrently and merged by
    /// volume (the same PVC mounted twice counts once; writable if either is).
    /// A claim that cannot be resolved is logged and treated as not Hearth's: the
    /// extender degrades to "no preference", it never blocks scheduling on the store.
    public func hearthVolumes(of pod: Pod) async -> [PodVolume] {
        let claims = pod.claims
        let resolver = self.resolver
        let resolved = await withTaskGroup(of: (PodClaim, ResolvedVolume?).self) { group in
            for claim in Set(claims.map { PodClaim(namespace: $0.namespace, name: $0.name, readOnly: true) }) {
                group.addTask {
                    do {
                        return (claim, try await resolver.volume(for: PVCReference(namespace: claim.namespace, name: claim.name)))
                    } catch {
                        self.logger.warning("claim \(claim.namespace)/\(claim.name) not resolved, scoring it as non-Hearth: \(error)")
                        self.metrics?.resolveFailed()
                        return (claim, nil)
                    }
                }
            }
            var byClaim: [PVCReference: ResolvedVolume] = [:]
            for await (claim, volume) in group {
                if let volume { byClaim[PVCReference(namespace: claim.namespace, name: claim.name)] = volume }
            }
            return byClaim
        }
        var volumes: [PodVolume] = []
        var index: [String: Int] = [:]
        for claim in claims {
            guard let volume = resolved[PVCReference(namespace: claim.namespace, name: claim.name)] else { continue }
            if let existing = index[volume.id] {
                volumes[existing].writer = volumes[existing].writer || !claim.readOnly
            } else {
                index[volume.id] = volumes.count
                volumes.append(PodVolume(claim: claim, volumeID: volume.id, logicalBytes: volume.logicalBytes,
                                         writer: !claim.readOnly))
            }
        }
        return volumes
    }

    /// Bytes of `volumes` cached on each of `nodes` (by index), and the volumes'
    /// total; see ``InventoryStore/locality(of:on:)`` for how sizes are taken.
    public func locality(of volumes: [PodVolume], on nodes: [String]) -> InventoryStore.Locality {
        inventory.locality(of: volumes.map { (id: $0.volumeID, storeBytes: $0.logicalBytes) }, on: nodes)
    }
}
