import Testing
import Synchronization
import ProdReadyCore
import ProdReadyInfra
import TestSupport

/// An infrastructure whose health answer is held until the test releases it, and which counts how often it was
/// asked: the gate's coalescing is pure bookkeeping, checked here without servers.
private final class HeldInfrastructure: Infrastructure, Sendable {
    let kind: ProviderKind = .external
    let supportedOperations: Set<ControlOperation> = []
    private let state = Mutex<(asked: Int, waiters: [CheckedContinuation<Void, Never>], released: Bool)>((0, [], false))

    var timesAsked: Int { state.withLock { $0.asked } }

    func endpoints() async -> StackEndpoints {
        var endpoints = StackEndpoints()
        endpoints.redisURL = "redis://127.0.0.1:1"
        return endpoints
    }

    func perform(_ operation: ControlOperation, on component: Component) async throws {
        throw ProdReadyError(.notControllable, "held infrastructure is not controllable")
    }

    func health(_ component: Component) async -> ComponentHealth {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state in
                state.asked += 1
                if state.released { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
        return ComponentHealth(component: component, isHealthy: true, detail: "answer #\(timesAsked)", latencyMilliseconds: 1)
    }

    func release() {
        let waiters = state.withLock { state in
            state.released = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func logs(_ component: Component, lines: Int) async throws -> String { "" }
}

@Suite("Health gate")
struct HealthGateTests {
    @Test("guards asking while a probe runs share its answer; a guard asking afterwards probes again")
    func concurrentGuardsShareOneProbe() async throws {
        let gate = HealthGate()
        let infrastructure = HeldInfrastructure()
        let callers = 20
        let answers = try await withThrowingTaskGroup(of: ComponentHealth.self) { group in
            for _ in 0..<callers {
                group.addTask { await gate.health(of: .redis, in: infrastructure) }
            }
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(30)
            while await gate.callersJoined < callers - 1 {
                guard clock.now < deadline else { throw ProdReadyError(.timeout, "only \(await gate.callersJoined) callers joined the running probe") }
                try await Task.sleep(for: .milliseconds(5))
            }
            infrastructure.release()
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(answers.count == callers)
        #expect(Set(answers.map(\.detail)) == ["answer #1"])
        #expect(infrastructure.timesAsked == 1)
        #expect(await gate.probesStarted == 1)

        let later = await gate.health(of: .redis, in: infrastructure)
        #expect(later.detail == "answer #2")
        #expect(await gate.probesStarted == 2)
    }

    @Test("different components are probed separately")
    func componentsAreSeparate() async {
        let gate = HealthGate()
        let infrastructure = HeldInfrastructure()
        infrastructure.release()
        async let redis = gate.health(of: .redis, in: infrastructure)
        async let postgres = gate.health(of: .postgres, in: infrastructure)
        let answers = await [redis, postgres]
        #expect(Set(answers.map(\.component)) == [.redis, .postgres])
        #expect(infrastructure.timesAsked == 2)
        #expect(await gate.probesStarted == 2)
    }
}
