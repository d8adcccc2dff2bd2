import Foundation

/// The scoring policy, in one place so that the documentation (docs/scheduler.md),
/// the filter and prioritize all mean the same thing by "share" and "score".
///
/// A node's *share* is the bytes of the pod's Hearth volumes it caches divided by
/// those volumes' total logical bytes (cached bytes are clamped per volume to the
/// volume's size, so a stale report can never claim more than 100%).
///
/// Its *score* (0...10, kube-scheduler's MaxExtenderPriority):
/// - 10 only when the share is exactly 100%: "everything is already here";
/// - 0 only when the node caches nothing of the pod's volumes;
/// - otherwise `floor(share × 10)`, raised to at least 1, so any cached byte beats
///   none and 99.9% does not tie with 100%.
/// Empty volumes (total 0 bytes) and pods with no Hearth volume give every node 0:
/// there is nothing to be near, so the extender stays out of the decision. Ties are
/// left as ties: kube-scheduler adds the other plugins' scores and picks at random
/// among the best, which spreads pods instead of piling them on the first name.
public enum Scoring {
    public static let maxScore: Int64 = 10

    public static func score(cachedBytes: Int64, totalBytes: Int64) -> Int64 {
        guard totalBytes > 0, cachedBytes > 0 else { return 0 }
        if cachedBytes >= totalBytes { return maxScore }
        let scaled = Int64((Double(cachedBytes) / Double(totalBytes) * Double(maxScore)).rounded(.down))
        return min(maxScore - 1, max(1, scaled))
    }

    /// True when `cachedBytes` of `totalBytes` reaches `minimumShare` (exact, in
    /// integers where it matters: 1 byte short of 50% is not 50%).
    public static func meets(_ minimumShare: Double, cachedBytes: Int64, totalBytes: Int64) -> Bool {
        guard totalBytes > 0, minimumShare > 0 else { return true }  // nothing to be near
        if minimumShare >= 1 { return cachedBytes >= totalBytes }
        return Double(cachedBytes) >= minimumShare * Double(totalBytes)
    }

    /// "37%" for messages; floors so that a node short of 50% never reads "50%".
    public static func percent(cachedBytes: Int64, totalBytes: Int64) -> String {
        guard totalBytes > 0 else { return "100%" }
        let value = (Double(cachedBytes) / Double(totalBytes) * 1000).rounded(.down) / 10
        return value == value.rounded() ? "\(Int(value))%" : "\(value)%"
    }
}

/// A pod's hard locality requirement, from its annotation.
///
/// `hearth.csi.dev/min-cached-share: "80%"` (or `"0.8"`) keeps only nodes that cache
/// at least that share of the pod's Hearth volume bytes. Without the annotation
/// locality is a preference only (prioritize), and every node passes the filter.
public struct LocalityRequirement: Sendable, Hashable {
    public static let annotation = "hearth.csi.dev/min-cached-share"

    /// 0 < minimumShare <= 1.
    public var minimumShare: Double

    public init(minimumShare: Double) { self.minimumShare = minimumShare }

    /// The pod's requirement; nil without the annotation (or with "0" / "0%").
    /// Throws a message for the pod's events when the value is not a share.
    public static func of(_ annotations: [String: String]?) throws(LocalityError) -> LocalityRequirement? {
        guard let raw = annotations?[annotation] else { return nil }
        let text = raw.trimmingCharacters(in: .whitespaces)
        var share: Double?
        if text.hasSuffix("%") {
            share = Double(text.dropLast().trimmingCharacters(in: .whitespaces)).map { $0 / 100 }
        } else {
            share = Double(text)
        }
        guard let share, share.isFinite, share >= 0, share <= 1 else {
            throw LocalityError(message: "annotation \(annotation)=\(raw.debugDescription) is not a share: use \"0.8\" or \"80%\" (0 to 100%)")
        }
        return share == 0 ? nil : LocalityRequirement(minimumShare: share)
    }
}

/// An unusable locality annotation; the message ends up in the pod's events.
public struct LocalityError: Error, Sendable, Hashable {
    public var message: String
}
