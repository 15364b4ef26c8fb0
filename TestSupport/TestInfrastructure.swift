public import ProdReadyCore
public import ProdReadyInfra
import Foundation

/// The infrastructure this test process uses, resolved once.
///
/// `PRODREADY_INFRA=auto` (the default) picks, in order: the stack `prodready up` started (controllable), the
/// endpoints in environment variables when every variable a test needs is set (external, not controllable),
/// else a private embedded stack for this test process, booted component by component on first use and torn
/// down when the process exits (even through SIGKILL, by its watchdog).
public actor TestInfrastructure {
    public static let shared = TestInfrastructure()

    public nonisolated let settings: InfrastructureSettings
    public nonisolated let home: String
    private var processStack: NativeStack?
    private var upStack: NativeStack?
    private var resolvedUpStack = false
    private var bootFailures: [Component: String] = [:]

    init() {
        self.init(environment: ProcessInfo.processInfo.environment)
    }

    /// Resolution from an explicit environment (tests of the resolution itself use this).
    public init(environment: [String: String]) {
        // Never all-or-nothing: a bad variable of one component must neither stop the others nor turn strict
        // mode off (a run with an incomplete S3 configuration once skipped everything under CI=true).
        settings = InfrastructureSettings(reading: environment)
        home = prodreadyHome(environment: environment)
    }

    /// Whether missing infrastructure fails tests rather than skipping them. Read from CI and
    /// PRODREADY_REQUIRE_INFRA alone, whatever else the environment gets wrong.
    public nonisolated var isStrict: Bool { settings.isStrict }

    /// The endpoints for `components`, starting them in the process stack if that is where they come from.
    /// Throws a `ProdReadyError` whose message says what was tried and how to fix it.
    public func endpoints(for components: [Component]) async throws -> StackEndpoints {
        try await source(for: components).endpoints()
    }

    /// The infrastructure that serves `components`. Throws `configuration` for a variable of one of
    /// `components` (or the provider) that is set wrong, `not_found` for a component nothing provides, and
    /// `process_failed` for an embedded component that could not start.
    public func source(for components: [Component]) async throws -> any Infrastructure {
        if let problem = settings.configurationError(for: components) { throw problem }
        switch settings.provider {
        case .external:
            let missing = components.filter { !settings.configuredEndpoints.has($0) }
            guard missing.isEmpty else {
                throw ProdReadyError(.notFound, "PRODREADY_INFRA=external but \(missing.map { EnvironmentVariable.name(for: $0) }.joined(separator: ", ")) not set")
            }
            return ExternalInfrastructure(endpoints: settings.configuredEndpoints)
        case .compose:
            return ComposeInfrastructure(composeFile: repositoryRoot + "/compose/infra.yml")
        case .native, .auto:
            if let up = await attachedUpStack() {
                let running = await up.endpoints
                let notRunning = components.filter { !running.has($0) }
                if notRunning.isEmpty { return up }
                if settings.provider == .native {
                    throw ProdReadyError(.notFound, "the `prodready up` stack does not run \(notRunning.map(\.rawValue).joined(separator: ", ")); run `prodready up --components \(components.map(\.rawValue).joined(separator: ","))`")
                }
            }
            if settings.provider == .auto {
                let configured = settings.configuredEndpoints
                if !configured.components.isEmpty && components.allSatisfy(configured.has) {
                    return ExternalInfrastructure(endpoints: configured)
                }
            }
            return try await ensureProcessStack(components)
        }
    }

    /// Whether destructive control of the infrastructure serving `components` is allowed for this process.
    public func destructiveControlAllowed(for components: [Component], operations: [ControlOperation]) async -> (allowed: Bool, reason: String) {
        do {
            let source = try await source(for: components)
            let unsupported = operations.filter { !source.supportedOperations.contains($0) }
            if !unsupported.isEmpty {
                return (false, "the \(source.kind) provider cannot \(unsupported.map(\.rawValue).joined(separator: "/")) components (external infrastructure is discovery-only); run with PRODREADY_INFRA=native or use a private stack")
            }
            if let stack = source as? NativeStack, stack === processStack { return (true, "") }
            if settings.allowsDestructive { return (true, "") }
            return (false, "the \(source.kind) infrastructure was not started by this test process; set \(EnvironmentVariable.allowDestructive)=1 to let tests stop or kill it")
        } catch {
            return (false, "\(error)")
        }
    }

    private func attachedUpStack() async -> NativeStack? {
        if !resolvedUpStack {
            resolvedUpStack = true
            upStack = await StackLocations.attachUpStack(home: home)
        }
        return upStack
    }

    private func ensureProcessStack(_ components: [Component]) async throws -> NativeStack {
        for component in Component.closure(components) {
            if let failure = bootFailures[component] {
                throw ProdReadyError(.processFailed, failure)
            }
        }
        if processStack == nil {
            processStack = try NativeStack(directory: StackLocations.newOwnedStack(home: home, label: "tests"), home: home, owned: true)
        }
        let stack = processStack!
        do {
            try await stack.ensure(components)
        } catch {
            let tried = describeAttempts(components)
            let message = "\(tried); the embedded stack could not start \(components.map(\.rawValue).joined(separator: ", "))"
            for component in Component.closure(components) where !(await stack.isRunning(component)) {
                bootFailures[component] = "\(message): \(error)"
            }
            throw ProdReadyError(.processFailed, message, underlying: error)
        }
        return stack
    }

    private func describeAttempts(_ components: [Component]) -> String {
        let variables = components.map { component in
            "\(EnvironmentVariable.name(for: component)) \(settings.configuredEndpoints.has(component) ? "set" : "unset")"
        }
        return "tried: `prodready up` stack at \(StackLocations.upStack(home: home)) (not running), variables (\(variables.joined(separator: ", ")))"
    }

    /// The checkout this test process runs in (the parent of the ProdReady home, or the working directory).
    public nonisolated var repositoryRoot: String {
        home.hasSuffix("/.prodready") ? String(home.dropLast("/.prodready".count)) : FileManager.default.currentDirectoryPath
    }
}
