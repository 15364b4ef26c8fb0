public import Testing
import Foundation

/// How a test may use the deployment behind `<variable>` when that variable points at an external one. Every
/// such test creates (and deletes) data there, which needs `PRODREADY_ALLOW_DESTRUCTIVE=1` (SPEC-services, the
/// seed's `RUN_LIVE_OMS_SMOKE`); a test that must control the processes (crash, pause, SIGTERM) never runs
/// against it. A test that cannot run is skipped with the reason, or fails in strict mode, like every guard.
public struct ControllableDeploymentTrait: TestTrait, TestScoping {
    public enum ExternalUse: Sendable, Equatable {
        /// Only through its API.
        case apiOnly
        /// Also reads its stores directly: needs these variables (`A|B` for alternatives).
        case readsStores([String])
        /// Signals its processes: never.
        case never
    }

    public let variable: String
    public let why: String
    public let use: ExternalUse

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let unmet = Self.unmet(variable: variable, why: why, use: use, environment: ProcessInfo.processInfo.environment)
        try await GuardDecision.decide(unmet, strict: TestInfrastructure.shared.isStrict).enforce(for: test, performing: function)
    }

    /// Why the test cannot run in `environment`, or nil when it can.
    public static func unmet(variable: String, why: String, use: ExternalUse, environment: [String: String]) -> UnmetRequirement? {
        func isSet(_ name: Substring) -> Bool { environment[String(name)].map { !$0.isEmpty } ?? false }
        guard isSet(Substring(variable)) else { return nil }
        let external = "\(variable) points at an external deployment, and this test \(why)"
        if use == .never { return UnmetRequirement(.notControllable, external) }
        guard environment["PRODREADY_ALLOW_DESTRUCTIVE"] == "1" else {
            return UnmetRequirement(.notControllable, "\(external) and creates and deletes data there: set PRODREADY_ALLOW_DESTRUCTIVE=1 to allow it")
        }
        if case .readsStores(let stores) = use {
            let missing = stores.filter { entry in !entry.split(separator: "|").contains(where: isSet) }
            if !missing.isEmpty {
                return UnmetRequirement(.notControllable, "\(external): set \(missing.map { $0.replacingAll("|", with: " or ") }.joined(separator: ", ")) as well")
            }
        }
        return nil
    }
}

extension Trait where Self == ControllableDeploymentTrait {
    /// The test starts its own deployment of the service behind `variable`, because it `why` (e.g. "SIGTERMs its processes").
    public static func ownDeployment(_ variable: String, because why: String) -> Self {
        ControllableDeploymentTrait(variable: variable, why: why, use: .never)
    }

    /// The test uses the service behind `variable` through its API only: against an external deployment it runs
    /// with `PRODREADY_ALLOW_DESTRUCTIVE=1`.
    public static func usesAPI(of variable: String) -> Self {
        ControllableDeploymentTrait(variable: variable, why: "works through its API", use: .apiOnly)
    }

    /// The test reads the stores of the service behind `variable` (`why`): against an external deployment it runs
    /// with `PRODREADY_ALLOW_DESTRUCTIVE=1` when every variable of `stores` is set (`A|B` for alternatives), and is
    /// skipped naming the missing ones otherwise.
    public static func readsStores(of variable: String, through stores: [String], because why: String) -> Self {
        ControllableDeploymentTrait(variable: variable, why: why, use: .readsStores(stores))
    }
}

/// What a test must be given to read an OMS deployment's stores: the stack's variables for Postgres, S3 and Redis.
/// Where the deployment keeps its data inside them comes from `OMS_SCHEMA`, `OMS_BUCKET` and `OMS_REDIS_PREFIX`
/// (the services' own defaults when unset).
public let omsStoreVariables = ["POSTGRES_URL", "S3_ENDPOINT_URL|MINIO_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "REDIS_URL"]
