import CSIProto
import HearthRPC
import SwiftProtobuf

/// CSI Identity: who this plugin is, what it offers, whether it is ready.
/// Served by every role; what it advertises depends on the roles the
/// process plays (a node-only plugin must not claim the controller service).
public struct IdentityService: Sendable {
    public struct Roles: OptionSet, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        public static let controller = Roles(rawValue: 1)
        public static let node = Roles(rawValue: 2)
        public static let groupController = Roles(rawValue: 4)
    }

    public let roles: Roles
    /// Answers Probe: false while the process cannot serve yet (e.g. the
    /// store is unreachable). Errors become FAILED_PRECONDITION.
    public let readiness: @Sendable () async throws -> Bool

    public init(roles: Roles, readiness: @escaping @Sendable () async throws -> Bool = { true }) {
        self.roles = roles
        self.readiness = readiness
    }

    public static let serviceName = "/csi.v1.Identity/"

    public var routes: RPCRoutes {
        var r = RPCRoutes()
        r.unary(Self.serviceName + "GetPluginInfo") { (_: Csi_V1_GetPluginInfoRequest, _) in
            self.pluginInfo()
        }
        r.unary(Self.serviceName + "GetPluginCapabilities") { (_: Csi_V1_GetPluginCapabilitiesRequest, _) in
            self.capabilities()
        }
        r.unary(Self.serviceName + "Probe") { (_: Csi_V1_ProbeRequest, _) in
            try await self.probe()
        }
        return r
    }

    func pluginInfo() -> Csi_V1_GetPluginInfoResponse {
        var info = Csi_V1_GetPluginInfoResponse()
        info.name = HearthVersion.driverName
        info.vendorVersion = HearthVersion.current
        info.manifest = ["grpc-core": GRPCRuntime.coreVersion]
        return info
    }

    func capabilities() -> Csi_V1_GetPluginCapabilitiesResponse {
        var response = Csi_V1_GetPluginCapabilitiesResponse()
        func service(_ type: Csi_V1_PluginCapability.Service.TypeEnum) {
            var capability = Csi_V1_PluginCapability()
            capability.service.type = type
            response.capabilities.append(capability)
        }
        if roles.contains(.controller) {
            service(.controllerService)
            var expansion = Csi_V1_PluginCapability()
            expansion.volumeExpansion.type = .online
            response.capabilities.append(expansion)
        }
        if roles.contains(.groupController) { service(.groupControllerService) }
        // Volumes are reachable from every node (the store is shared), but
        // the topology segment lets Kubernetes spread and pin them by zone.
        service(.volumeAccessibilityConstraints)
        return response
    }

    func probe() async throws -> Csi_V1_ProbeResponse {
        var response = Csi_V1_ProbeResponse()
        do {
            response.ready = Google_Protobuf_BoolValue(try await readiness())
        } catch {
            throw RPCError(.failedPrecondition, "not ready: \(error)")
        }
        return response
    }
}
