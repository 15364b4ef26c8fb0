import Testing
import Synchronization
import PostgresNIO
import ProdReadyCore
import ProdReadyInfra
import ProdReadyReliability
import TestSupport

/// SPEC-reliability §4 with a real dependency: a private Postgres that is stopped and started again.
@Suite("OMS fast layer: circuit breaker around a real Postgres", .requiresEmbedded(.postgres))
struct CircuitBreakerTests {
    @Test("opens after 5 failures of a stopped Postgres, fails fast (< 10 ms) without connecting, half-opens after the cooldown, closes after 3 successes, re-opens on a half-open failure")
    func breakerAroundPostgres() async throws {
        try await withPrivateStack([.postgres], label: "breaker") { stack in
            let url = try #require(await stack.endpoints.postgresURL)
            let clock = ManualClock()
            let breaker = try CircuitBreaker(name: "orders-db", options: .init(failureThreshold: 5, successThreshold: 3, cooldown: .seconds(30)), clock: clock)
            let connections = Mutex(0)
            @Sendable func select() async throws {
                connections.withLock { $0 += 1 }
                try await withPostgresConnection(url) { connection in
                    _ = try await connection.query("SELECT 1", logger: testLogger).collect()
                }
            }

            try await breaker.call(select)
            try await stack.stop(.postgres)
            for attempt in 1...5 {
                await #expect(throws: (any Error).self, "attempt \(attempt) against a stopped server") { try await breaker.call(select) }
            }
            #expect(breaker.state == .open)
            #expect(breaker.health.status == "degraded")
            #expect(breaker.health.reason?.contains("connection_failed") == true, "\(String(describing: breaker.health.reason))")
            let attemptsWhenOpened = connections.withLock { $0 }

            let validator = PerformanceValidator()
            let rejected = Mutex(0)
            let measurement = try await validator.measure("open breaker rejects", thresholds: [.latency(percentile: 99, atMost: .milliseconds(10))], operations: 200) { _ in
                do {
                    try await breaker.call(select)
                } catch let error as ProdReadyError where error.code == .circuitOpen {
                    rejected.withLock { $0 += 1 }
                }
            }
            #expect(measurement.passed, "\(measurement.report)")
            #expect(rejected.withLock { $0 } == 200)
            #expect(connections.withLock { $0 } == attemptsWhenOpened, "no call reached the database while open")

            try await stack.start(.postgres)
            clock.advance(by: .seconds(30))
            #expect(breaker.state == .halfOpen)
            try await breaker.call(select)
            try await breaker.call(select)
            #expect(breaker.state == .halfOpen)
            try await breaker.call(select)
            #expect(breaker.state == .closed)
            #expect(breaker.health.status == "ok")

            // Trip it again, then fail the half-open probe: straight back to open.
            try await stack.stop(.postgres)
            for _ in 1...5 { await #expect(throws: (any Error).self) { try await breaker.call(select) } }
            clock.advance(by: .seconds(30))
            #expect(breaker.state == .halfOpen)
            await #expect(throws: (any Error).self) { try await breaker.call(select) }
            #expect(breaker.state == .open)
            let refused = await #expect(throws: ProdReadyError.self) { try await breaker.call(select) }
            #expect(refused?.code == .circuitOpen)
        }
    }
}
