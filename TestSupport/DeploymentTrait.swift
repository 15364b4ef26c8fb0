public import Testing
import Foundation

/// A test that must control a service's processes or read its stores directly (crash it, pause it, look in its
/// bucket) cannot run against an external deployment: with `<variable>` set it is skipped with that reason, or
/// fails in strict mode, like every other guard.
public struct ControllableDeploymentTrait: TestTrait, TestScoping {
    public let variable: String
    public let why: String

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let environment = ProcessInfo.processInfo.environment
        let unmet = environment[variable].map { $0.isEmpty } == false
            ? UnmetRequirement(.notControllable, "\(variable) points at an external deployment, and this test \(why)")
            : nil
        try await GuardDecision.decide(unmet, strict: TestInfrastructure.shared.isStrict).enforce(for: test, performing: function)
    }
}

extension Trait where Self == ControllableDeploymentTrait {
    /// The test starts its own deployment of the service behind `variable`, because it `why` (e.g. "SIGTERMs its processes").
    public static func ownDeployment(_ variable: String, because why: String) -> Self {
        ControllableDeploymentTrait(variable: variable, why: why)
    }
}
