public import ProdReadyInfra
import ProdReadyCore

/// Boots a private embedded stack of `components` for the duration of `body`, then tears it down (also
/// when `body` throws). Chaos tests that stop or kill infrastructure use these so other tests never notice.
public func withPrivateStack<Result: Sendable>(
    _ components: [Component],
    label: String = "private",
    _ body: (NativeStack) async throws -> Result
) async throws -> Result {
    let home = TestInfrastructure.shared.home
    let stack = try NativeStack(directory: StackLocations.newOwnedStack(home: home, label: label), home: home, owned: true)
    return try await runThenCleanUp({
        try await stack.ensure(components)
        return try await body(stack)
    }, cleanUp: { try await stack.teardown(removeData: true) })
}
