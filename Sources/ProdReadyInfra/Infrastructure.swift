import ProdReadyCore

/// One way of reaching (and maybe controlling) the five components. Tests and the CLI use only this.
public protocol Infrastructure: Sendable {
    var kind: ProviderKind { get }
    /// Which control operations this provider can perform at all.
    var supportedOperations: Set<ControlOperation> { get }
    /// Endpoints of the components that are part of this infrastructure.
    func endpoints() async -> StackEndpoints
    func perform(_ operation: ControlOperation, on component: Component) async throws
    func health(_ component: Component) async -> ComponentHealth
    /// The component's log text (the last `lines` lines).
    func logs(_ component: Component, lines: Int) async throws -> String
}

extension NativeStack: Infrastructure {
    public nonisolated var kind: ProviderKind { .native }
    public nonisolated var supportedOperations: Set<ControlOperation> { Set(ControlOperation.allCases) }

    public func endpoints() async -> StackEndpoints { endpoints }

    public func perform(_ operation: ControlOperation, on component: Component) async throws {
        switch operation {
        case .start: try await start(component)
        case .stop: try await stop(component)
        case .kill: try await kill(component)
        case .pause: try pause(component)
        case .resume: try resume(component)
        case .restart: try await restart(component)
        }
    }

    public func health(_ component: Component) async -> ComponentHealth {
        guard let info = snapshot.component(component) else {
            return ComponentHealth(component: component, isHealthy: false, detail: "not part of this stack", latencyMilliseconds: nil)
        }
        guard info.process?.isAlive == true else {
            return ComponentHealth(component: component, isHealthy: false, detail: "stopped (port \(info.port) kept for restart)", latencyMilliseconds: nil)
        }
        if info.isPaused {
            return ComponentHealth(component: component, isHealthy: false, detail: "paused (SIGSTOP); resume it to answer again", latencyMilliseconds: nil)
        }
        return await HealthProbe.check(component, endpoints: endpoints, timeout: .seconds(3))
    }

    public func logs(_ component: Component, lines: Int) async throws -> String {
        guard let path = logPath(component) else {
            throw ProdReadyError(.notRunning, "\(component) is not part of stack \(id)")
        }
        return logTail(path, lines: lines)
    }
}

/// Someone else's deployment, known only through environment variables.
public struct ExternalInfrastructure: Infrastructure {
    public let configured: StackEndpoints

    public init(endpoints: StackEndpoints) { configured = endpoints }

    public var kind: ProviderKind { .external }
    public var supportedOperations: Set<ControlOperation> { [] }
    public func endpoints() async -> StackEndpoints { configured }

    public func perform(_ operation: ControlOperation, on component: Component) async throws {
        throw ProdReadyError(.notControllable, "\(component) is external infrastructure (set by environment variables): ProdReady cannot \(operation) it; use PRODREADY_INFRA=native or compose for chaos tests")
    }

    public func health(_ component: Component) async -> ComponentHealth {
        guard configured.has(component) else {
            return ComponentHealth(component: component, isHealthy: false, detail: "\(EnvironmentVariable.name(for: component)) is not set", latencyMilliseconds: nil)
        }
        return await HealthProbe.check(component, endpoints: configured)
    }

    public func logs(_ component: Component, lines: Int) async throws -> String {
        throw ProdReadyError(.notControllable, "logs of external \(component) are not available to ProdReady")
    }
}
