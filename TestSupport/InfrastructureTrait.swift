public import Testing
public import ProdReadyInfra
import ProdReadyCore

/// What a test needs from the infrastructure.
public struct InfrastructureRequirement: Sendable, Equatable {
    public init(components: [Component], operations: [ControlOperation] = [], embedded: [Component] = []) {
        self.components = components
        self.operations = operations
        self.embedded = embedded
    }

    public var components: [Component]
    /// Control operations the test performs on the *shared* infrastructure.
    public var operations: [ControlOperation]
    /// The test boots its own private embedded stacks of these components.
    public var embedded: [Component]
}

/// Why a guarded test cannot run, by kind, so that every kind is decided the same way.
public struct UnmetRequirement: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// Nothing provides a component the test needs (a variable unset in external mode, a component the
        /// `prodready up` stack does not run).
        case missing
        /// The component is provided but does not answer its health probe.
        case unreachable
        /// A variable the test depends on is set but unusable (malformed, incomplete, unknown provider).
        case configuration
        /// The test stops, kills or pauses infrastructure that this process may not or cannot control.
        case notControllable = "not controllable"
        /// The embedded provider cannot start what the test needs (missing binaries, a failed boot).
        case cannotStart = "cannot start"
    }

    public var kind: Kind
    public var reason: String

    public init(_ kind: Kind, _ reason: String) {
        self.kind = kind
        self.reason = reason
    }

    /// The kind a `ProdReadyError` from resolving the infrastructure stands for.
    static func from(_ error: any Error) -> UnmetRequirement {
        guard let error = error as? ProdReadyError else { return UnmetRequirement(.cannotStart, "\(error)") }
        switch error.code {
        case .configuration: return UnmetRequirement(.configuration, error.message)
        case .notFound: return UnmetRequirement(.missing, error.message)
        default: return UnmetRequirement(.cannotStart, error.description)
        }
    }

    public var description: String { "\(kind.rawValue): \(reason)" }
}

/// How a guard decides when its requirement is not met.
public enum GuardDecision: Equatable, Sendable {
    case run
    case skip(reason: String)
    case fail(reason: String)

    /// Skips locally, fails in strict mode (CI=true or PRODREADY_REQUIRE_INFRA=1), whatever the kind: CI never
    /// goes green by skipping.
    public static func decide(_ unmet: UnmetRequirement?, strict: Bool) -> GuardDecision {
        guard let unmet else { return .run }
        if strict {
            return .fail(reason: "this test cannot run and CI/PRODREADY_REQUIRE_INFRA forbids skipping — \(unmet)")
        }
        return .skip(reason: "skipped — \(unmet). To run it: `prodready up` (or set the variables for your own deployment, see README)")
    }
}

/// A Swift Testing trait that checks infrastructure before a test runs; see `Trait.requires(_:)`.
extension GuardDecision {
    /// What every guard does with its decision: run the test, skip it saying why, or record the failure.
    public func enforce(for test: Test, performing function: @Sendable () async throws -> Void) async throws {
        switch self {
        case .run:
            try await function()
        case .skip(let reason):
            print("⚠️  \(test.name): \(reason)")
            try Test.cancel(Comment(rawValue: reason))
        case .fail(let reason):
            Issue.record(Comment(rawValue: reason))
        }
    }
}

public struct InfrastructureTrait: TestTrait, SuiteTrait, TestScoping {
    public let requirement: InfrastructureRequirement
    /// The infrastructure consulted; the process-wide one unless a test of the guard itself injects another.
    let infrastructure: TestInfrastructure
    public var isRecursive: Bool { true }

    public init(requirement: InfrastructureRequirement, infrastructure: TestInfrastructure = .shared) {
        self.requirement = requirement
        self.infrastructure = infrastructure
    }

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        // A recursive suite trait is asked for the suite itself too; only tests need the check.
        guard !test.isSuite else {
            try await function()
            return
        }
        try await decision().enforce(for: test, performing: function)
    }

    /// What the guard does for its test right now.
    public func decision() async -> GuardDecision {
        GuardDecision.decide(await Self.unmet(requirement, infrastructure: infrastructure), strict: infrastructure.isStrict)
    }

    /// Why `requirement` cannot be met right now, or nil when it can. Checked in the order that costs least:
    /// the configuration and provider, whether the provider lets the test control what it must, each
    /// component's health, and last the binaries of private stacks.
    public static func unmet(_ requirement: InfrastructureRequirement, infrastructure: TestInfrastructure) async -> UnmetRequirement? {
        if !requirement.components.isEmpty {
            let source: any Infrastructure
            do {
                source = try await infrastructure.source(for: requirement.components)
            } catch {
                return UnmetRequirement.from(error)
            }
            if !requirement.operations.isEmpty {
                let verdict = await infrastructure.destructiveControlAllowed(for: requirement.components, operations: requirement.operations)
                if !verdict.allowed { return UnmetRequirement(.notControllable, verdict.reason) }
            }
            for component in requirement.components {
                var health = await HealthGate.shared.health(of: component, in: source)
                // A transient error or a slow answer from a server that accepted the connection (busy, or "the
                // database system is starting up") is not an outage: check again for a while. Every guard
                // asking at once shares one probe (HealthGate), so checking again adds no load of its own.
                let clock = ContinuousClock()
                let recheckUntil = clock.now + .seconds(30)
                while !health.isHealthy, health.failureMayPass, clock.now < recheckUntil {
                    do { try await Task.sleep(for: .milliseconds(200)) } catch { break }
                    health = await HealthGate.shared.health(of: component, in: source)
                }
                if !health.isHealthy {
                    return UnmetRequirement(.unreachable, "\(component) (\(source.kind)) does not answer: \(health.detail)")
                }
            }
        }
        if !requirement.embedded.isEmpty {
            do {
                try Toolchain(home: infrastructure.home).verify(Component.closure(requirement.embedded))
            } catch {
                return UnmetRequirement(.cannotStart, "private embedded stacks need local binaries: \(error)")
            }
        }
        return nil
    }
}

extension Trait where Self == InfrastructureTrait {
    /// The test needs these components reachable (from `prodready up`, variables, or the process stack).
    public static func requires(_ components: Component...) -> Self {
        InfrastructureTrait(requirement: InfrastructureRequirement(components: components, operations: [], embedded: []))
    }

    /// The test stops, kills or pauses the shared `components`: allowed on a stack this process started, or
    /// with `PRODREADY_ALLOW_DESTRUCTIVE=1`; never on external infrastructure.
    public static func requires(_ components: Component..., control operations: ControlOperation...) -> Self {
        InfrastructureTrait(requirement: InfrastructureRequirement(components: components, operations: operations, embedded: []))
    }

    /// The test boots private embedded stacks of these components (and may do anything to them).
    public static func requiresEmbedded(_ components: Component...) -> Self {
        InfrastructureTrait(requirement: InfrastructureRequirement(components: [], operations: [], embedded: components))
    }
}
