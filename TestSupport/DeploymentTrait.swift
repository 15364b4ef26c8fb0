public import Testing
import Foundation

/// A test that must control a service's processes or read its stores directly (crash it, pause it, look in its
/// bucket) cannot run against an external deployment: with `<variable>` set it is skipped with that reason, or
/// fails in strict mode, like every other guard.
public struct ControllableDeploymentTrait: TestTrait, TestScoping {
    public let variable: String
    public let why: String
    /// Variables that, all set, make an external deployment good enough (its stores are reachable); each entry
    /// may name alternatives as `A|B`. Empty: an external deployment never is.
    public let enoughWith: [String]

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let unmet = Self.unmet(variable: variable, why: why, enoughWith: enoughWith, environment: ProcessInfo.processInfo.environment)
        try await GuardDecision.decide(unmet, strict: TestInfrastructure.shared.isStrict).enforce(for: test, performing: function)
    }

    /// Why the test cannot run in `environment`, or nil when it can.
    public static func unmet(variable: String, why: String, enoughWith: [String], environment: [String: String]) -> UnmetRequirement? {
        func isSet(_ name: Substring) -> Bool { environment[String(name)].map { !$0.isEmpty } ?? false }
        guard isSet(Substring(variable)) else { return nil }
        guard !enoughWith.isEmpty else {
            return UnmetRequirement(.notControllable, "\(variable) points at an external deployment, and this test \(why)")
        }
        let missing = enoughWith.filter { entry in !entry.split(separator: "|").contains(where: isSet) }
        guard missing.isEmpty else {
            return UnmetRequirement(.notControllable, "\(variable) points at an external deployment, and this test \(why): set \(missing.map { $0.replacingAll("|", with: " or ") }.joined(separator: ", ")) as well")
        }
        return nil
    }
}

extension Trait where Self == ControllableDeploymentTrait {
    /// The test starts its own deployment of the service behind `variable`, because it `why` (e.g. "SIGTERMs its processes").
    public static func ownDeployment(_ variable: String, because why: String) -> Self {
        ControllableDeploymentTrait(variable: variable, why: why, enoughWith: [])
    }

    /// The test reads the stores of the service behind `variable` (`why`): against an external deployment it runs
    /// when every variable of `stores` is set (`A|B` for alternatives), and is skipped naming the missing ones
    /// otherwise.
    public static func readsStores(of variable: String, through stores: [String], because why: String) -> Self {
        ControllableDeploymentTrait(variable: variable, why: why, enoughWith: stores)
    }
}

/// What a test must be given to read an OMS deployment's stores: the stack's variables for Postgres, S3 and Redis.
/// Where the deployment keeps its data inside them comes from `OMS_SCHEMA`, `OMS_BUCKET` and `OMS_REDIS_PREFIX`
/// (the services' own defaults when unset).
public let omsStoreVariables = ["POSTGRES_URL", "S3_ENDPOINT_URL|MINIO_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "REDIS_URL"]
