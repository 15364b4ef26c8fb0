import Testing
import Foundation
import MetricsTestKit
import ProdReadyCore
import ProdReadyReliability
import TestSupport

struct Dependency: Error {}

@Suite("Circuit breaker state machine (manual clock)")
struct CircuitBreakerLogicTests {
    func makeBreaker(clock: ManualClock, metrics: TestMetrics = TestMetrics(), transitions: TransitionLog? = nil) throws -> CircuitBreaker {
        let record: @Sendable (CircuitState, CircuitState) -> Void = { from, to in transitions?.append("\(from.rawValue)→\(to.rawValue)") }
        return try CircuitBreaker(
            name: "postgres",
            options: .init(failureThreshold: 5, successThreshold: 3, cooldown: .seconds(10)),
            clock: clock,
            metricsFactory: metrics,
            onTransition: record
        )
    }

    final class TransitionLog: Sendable {
        private let entries = LockedArray()
        func append(_ entry: String) { entries.append(entry) }
        var all: [String] { entries.all }
    }

    @Test("opens after 5 consecutive failures; while open, calls are refused without running")
    func opensAfterThreshold() async throws {
        let clock = ManualClock()
        let breaker = try makeBreaker(clock: clock)
        for attempt in 1...4 {
            await #expect(throws: Dependency.self) { try await breaker.call { throw Dependency() } }
            #expect(breaker.state == .closed, "after \(attempt) failures")
        }
        // A success resets the count.
        try await breaker.call {}
        for _ in 1...4 { await #expect(throws: Dependency.self) { try await breaker.call { throw Dependency() } } }
        #expect(breaker.state == .closed)
        await #expect(throws: Dependency.self) { try await breaker.call { throw Dependency() } }
        #expect(breaker.state == .open)
        let ran = LockedArray()
        let refused = await #expect(throws: ProdReadyError.self) { try await breaker.call { ran.append("ran") } }
        #expect(refused?.code == .circuitOpen)
        #expect(refused?.isRetriable == true)
        #expect(ran.all.isEmpty, "an open breaker must not touch the dependency")
        #expect(breaker.health.status == "degraded")
        #expect(breaker.health.reason?.contains("5 consecutive failures") == true)
    }

    @Test("half-open after the cooldown; 3 successes close it; a failure in half-open re-opens it")
    func halfOpenTransitions() async throws {
        let clock = ManualClock()
        let log = TransitionLog()
        let metrics = TestMetrics()
        let breaker = try makeBreaker(clock: clock, metrics: metrics, transitions: log)
        for _ in 1...5 { await #expect(throws: Dependency.self) { try await breaker.call { throw Dependency() } } }
        clock.advance(by: .seconds(9))
        await #expect(throws: ProdReadyError.self) { try await breaker.call {} }
        #expect(breaker.state == .open)
        clock.advance(by: .seconds(1))
        #expect(breaker.state == .halfOpen)
        // A failing probe re-opens it for a full cooldown.
        await #expect(throws: Dependency.self) { try await breaker.call { throw Dependency() } }
        #expect(breaker.state == .open)
        clock.advance(by: .seconds(10))
        try await breaker.call {}
        try await breaker.call {}
        #expect(breaker.state == .halfOpen, "two successes are not enough")
        try await breaker.call {}
        #expect(breaker.state == .closed)
        #expect(breaker.health == BreakerHealth(status: "ok", state: .closed, reason: nil))
        #expect(log.all == ["closed→open", "open→half_open", "half_open→open", "open→half_open", "half_open→closed"])
        #expect(try metrics.expectCounter("prodready_circuit_breaker_transitions_total", [("breaker", "postgres"), ("to", "open")]).totalValue == 2)
        #expect(try metrics.expectCounter("prodready_circuit_breaker_rejected_total", [("breaker", "postgres")]).totalValue == 1)
        #expect(try metrics.expectGauge("prodready_circuit_breaker_state", [("breaker", "postgres")]).lastValue == 0)
    }

    @Test("half-open lets one probe through at a time; cancellation does not count as a failure")
    func probesAreLimited() async throws {
        let clock = ManualClock()
        let breaker = try makeBreaker(clock: clock)
        for _ in 1...5 { await #expect(throws: Dependency.self) { try await breaker.call { throw Dependency() } } }
        clock.advance(by: .seconds(10))
        let (gate, opener) = AsyncStream<Void>.makeStream()
        let probe = Task { try await breaker.call { for await _ in gate { break } } }
        try await eventually("the probe to be admitted") { breaker.health.state == .halfOpen }
        let second = await #expect(throws: ProdReadyError.self) { try await breaker.call {} }
        #expect(second?.code == .circuitOpen)
        opener.yield()
        try await probe.value
        await #expect(throws: CancellationError.self) { try await breaker.call { throw CancellationError() } }
        #expect(breaker.state == .halfOpen, "cancellation is not the dependency's fault")
    }

    @Test("invalid options are refused")
    func invalidOptions() {
        #expect(throws: ProdReadyError.self) { try CircuitBreaker(name: "x", options: .init(failureThreshold: 0)) }
        #expect(throws: ProdReadyError.self) { try CircuitBreaker(name: "x", options: .init(cooldown: .zero)) }
    }
}

/// A small lock-protected list for recording from concurrent closures.
final class LockedArray: Sendable {
    private let lock = NSLock()
    nonisolated(unsafe) private var values: [String] = []
    func append(_ value: String) { lock.withLock { values.append(value) } }
    var all: [String] { lock.withLock { values } }
}

@Suite("Backoff and retry policy")
struct BackoffTests {
    @Test("the ceiling doubles from the base and stops at the cap, without overflow")
    func ceilings() {
        let backoff = Backoff(base: .milliseconds(100), cap: .seconds(5))
        #expect((0...6).map { backoff.ceiling(attempt: $0) } == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(1600), .milliseconds(3200), .seconds(5)])
        #expect(backoff.ceiling(attempt: 500) == .seconds(5))
        #expect(backoff.ceiling(attempt: -3) == .milliseconds(100))
        #expect(Backoff(base: .zero, cap: .seconds(1)).ceiling(attempt: 3) == .zero)
    }

    @Test("full jitter: delays spread over [0, ceiling], reproducibly for a seed")
    func fullJitter() {
        let backoff = Backoff(base: .milliseconds(100), cap: .seconds(5))
        var random = SeededRandom(seed: 42)
        let delays = (0..<2_000).map { _ in backoff.delay(attempt: 3, using: &random) }
        #expect(delays.allSatisfy { $0 >= .zero && $0 <= .milliseconds(800) })
        let belowHalf = delays.filter { $0 < .milliseconds(400) }.count
        #expect((850...1150).contains(belowHalf), "uniform over the range, got \(belowHalf) of 2000 below half")
        var again = SeededRandom(seed: 42)
        #expect((0..<2_000).map { _ in backoff.delay(attempt: 3, using: &again) } == delays)
    }

    @Test("retries only retriable errors, and at most maxAttempts times")
    func boundedRetries() async throws {
        let attempts = LockedArray()
        var random = SeededRandom(seed: 1)
        let policy = RetryPolicy(maxAttempts: 4, maxElapsed: .seconds(10), backoff: Backoff(base: .milliseconds(1), cap: .milliseconds(2)))
        let error = await #expect(throws: ProdReadyError.self) {
            try await policy.run(using: &random) {
                attempts.append("x")
                throw ProdReadyError(.connectionFailed, "down", retriable: true)
            }
        }
        #expect(error?.code == .connectionFailed)
        #expect(attempts.all.count == 4)
        let permanent = LockedArray()
        await #expect(throws: ProdReadyError.self) {
            try await policy.run(using: &random) {
                permanent.append("x")
                throw ProdReadyError(.invalidArgument, "bad")
            }
        }
        #expect(permanent.all.count == 1, "a non-retriable error is not retried")
        let flaky = LockedArray()
        let value = try await policy.run(using: &random) {
            flaky.append("x")
            if flaky.all.count < 3 { throw ProdReadyError(.timeout, "slow", retriable: true) }
            return 7
        }
        #expect(value == 7)
        #expect(flaky.all.count == 3)
    }
}

@Suite("Envelope and SQL script parsing")
struct EnvelopeAndScriptTests {
    struct Shipped: EventPayload, Equatable {
        static let eventType = "Shipped"
        static let schemaVersion = 3
        var carrier: String
    }

    @Test("an envelope survives encode → decode with every field, and the wire names are snake_case")
    func roundTrip() throws {
        let envelope = EventEnvelope(
            id: "e-1", aggregateID: "order-1", sequence: 4, occurredAt: Date(timeIntervalSince1970: 1_790_000_000.25),
            correlationID: "c", causationID: "k", payload: Shipped(carrier: "DHL")
        )
        let bytes = try envelope.encoded()
        let json = String(decoding: bytes, as: UTF8.self)
        for key in ["\"aggregate_id\":\"order-1\"", "\"occurred_at\":\"", "\"causation_id\":\"k\"", "\"type\":\"Shipped\"", "\"version\":3"] {
            #expect(json.contains(key), "\(key) in \(json)")
        }
        let decoded = try EventEnvelope<Shipped>.decode(bytes)
        #expect(decoded.payload == Shipped(carrier: "DHL"))
        #expect(decoded.sequence == 4)
        #expect(abs(decoded.occurredAt.timeIntervalSince1970 - 1_790_000_000.25) < 0.001)
        #expect(decoded.causationID == "k")
    }

    @Test("a payload missing a field is refused with the field named")
    func malformedPayload() {
        let json = #"{"id":"e-2","type":"Shipped","version":3,"occurred_at":"2026-11-21T10:00:00Z","payload":{"courier":"x"}}"#
        let error = #expect(throws: ProdReadyError.self) { try EventEnvelope<Shipped>.decode(Array(json.utf8)) }
        #expect(error?.message.contains("carrier") == true, "\(String(describing: error))")
        #expect(error?.message.contains("e-2") == true)
    }

    @Test("statements split at semicolons outside quotes, dollar-quoted bodies and comments")
    func scriptSplitting() {
        let script = """
            CREATE TABLE a (x text DEFAULT 'a;b'); -- a comment; with a semicolon
            CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$
            BEGIN RETURN 1; END
            $$;
            -- only a comment;
            SELECT 1
            """
        let statements = SQLScript.statements(script)
        #expect(statements.count == 3, "\(statements)")
        #expect(statements.first == "CREATE TABLE a (x text DEFAULT 'a;b')")
        #expect(statements.dropFirst().first?.contains("BEGIN RETURN 1; END") == true)
        #expect(statements.last?.hasSuffix("SELECT 1") == true)
    }
}
