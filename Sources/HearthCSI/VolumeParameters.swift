import HearthRPC
import HearthStore

/// StorageClass parameters Hearth understands. Unknown keys are refused, so a
/// typo in a StorageClass fails at provisioning instead of being ignored.
enum VolumeParameters {
    /// How often a mounted volume commits dirty data (e.g. "5s", "1m").
    static let commitInterval = "commitInterval"
    /// "keep" (default): cached bytes outlive the mount, so a pod that comes
    /// back finds them; "drop": evicted at unstage.
    static let cachePolicy = "cachePolicy"
    /// Changeable by ControllerModifyVolume (VolumeAttributesClass).
    static let mutable: Set<String> = [commitInterval, cachePolicy]
    static let known: Set<String> = mutable

    // external-provisioner's --extra-create-metadata keys.
    static let pvcName = "csi.storage.k8s.io/pvc/name"
    static let pvcNamespace = "csi.storage.k8s.io/pvc/namespace"
    static let pvName = "csi.storage.k8s.io/pv/name"

    /// Splits request parameters into Hearth's own (validated) and the PVC
    /// the volume is for; the provisioner's metadata is not stored as a
    /// parameter so re-creates compare equal whatever PV name was chosen.
    static func parse(_ parameters: [String: String]) throws -> (own: [String: String], pvc: PVCReference?) {
        var own: [String: String] = [:]
        for (key, value) in parameters {
            if key.hasPrefix("csi.storage.k8s.io/") { continue }
            guard known.contains(key) else {
                throw RPCError(.invalidArgument, "unknown parameter \(key.debugDescription); Hearth understands \(known.sorted().joined(separator: ", "))")
            }
            try validate(key, value)
            own[key] = value
        }
        var pvc: PVCReference?
        if let name = parameters[pvcName], let namespace = parameters[pvcNamespace] {
            pvc = PVCReference(namespace: namespace, name: name)
        }
        return (own, pvc)
    }

    static func validate(_ key: String, _ value: String) throws {
        switch key {
        case commitInterval:
            guard let seconds = parseDuration(value), seconds >= 1, seconds <= 3600 else {
                throw RPCError(.invalidArgument, "\(commitInterval) must be a duration from 1s to 1h (e.g. \"5s\"), got \(value.debugDescription)")
            }
        case cachePolicy:
            guard ["keep", "drop"].contains(value) else {
                throw RPCError(.invalidArgument, "\(cachePolicy) must be \"keep\" or \"drop\", got \(value.debugDescription)")
            }
        default:
            break
        }
    }

    /// "5s", "2m", "1h", "30" (seconds) → seconds.
    static func parseDuration(_ text: String) -> Int? {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600]
        if let unit = text.last, let scale = units[unit] {
            return Int(text.dropLast()).map { $0 * scale }
        }
        return Int(text)
    }

    /// Applies ControllerModifyVolume's mutable parameters to a volume's parameters.
    static func modified(_ current: [String: String], with changes: [String: String]) throws -> [String: String] {
        guard !changes.isEmpty else { throw RPCError(.invalidArgument, "mutable_parameters is required") }
        var result = current
        for (key, value) in changes {
            guard mutable.contains(key) else {
                throw RPCError(.invalidArgument, "parameter \(key.debugDescription) cannot be modified; mutable: \(mutable.sorted().joined(separator: ", "))")
            }
            try validate(key, value)
            result[key] = value
        }
        return result
    }
}
