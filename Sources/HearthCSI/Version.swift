/// Hearth's version, reported by GetPluginInfo and `hearth --version`.
/// Bumped on release; the one place the version is written.
public enum HearthVersion {
    public static let current = "0.1.0"
    /// The CSI driver name registered with Kubernetes (CSIDriver object, StorageClass provisioner).
    public static let driverName = "hearth.csi.dev"
}
