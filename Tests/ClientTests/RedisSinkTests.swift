import Testing
import Synchronization
import PostgresNIO
import ProdReadyCore
import ProdReadyInfra
import ProdReadyPostgres
import ProdReadyRedis
import ProdReadyReliability
import ProdReadySinks
import TestSupport

struct OrderPlaced: EventPayload, Equatable {
    static let eventType = "OrderPlaced"
    static let schemaVersion = 1
    var orderID: String
    var amountCents: Int
}

/// Publishes through `inner`, then fails the whole batch, like a connection lost after the broker stored the
/// events but before the relay heard back: the relay schedules the rows for another attempt and publishes them again.
final class CrashAfterPublishSink: OutboxSink {
    let inner: any OutboxSink
    let crashes: Mutex<Int>

    init(inner: any OutboxSink, crashes: Int) {
        self.inner = inner
        self.crashes = Mutex(crashes)
    }

    func publish(_ records: [OutboxRecord]) async throws -> [Result<Void, ProdReadyError>] {
        let results = try await inner.publish(records)
        let crash = crashes.withLock { remaining in
            defer { remaining = max(0, remaining - 1) }
            return remaining > 0
        }
        if crash { throw ProdReadyError(.connectionFailed, "simulated crash after publishing", retriable: true) }
        return results
    }
}

@Suite("Outbox → Redis sink, real Postgres and Redis", .requires(.postgres, .redis))
struct RedisSinkTests {
    static let quickRetries = Backoff(base: .milliseconds(5), cap: .milliseconds(20))

    func enqueue(_ outbox: Outbox, count: Int, subject: String?, prefix: String = "order") async throws -> [String] {
        let messages = try (0..<count).map { index in
            try OutboxMessage(
                EventEnvelope(id: "\(prefix)-\(index)", aggregateID: "\(prefix)-\(index % 7)", sequence: Int64(index), correlationID: "c-\(index)",
                              payload: OrderPlaced(orderID: "\(prefix)-\(index)", amountCents: index)),
                source: "orders", subject: subject, maxRetries: 2
            )
        }
        try await outbox.transaction { try await $0.enqueue(contentsOf: messages) }
        return messages.map(\.eventID)
    }

    /// A migrated schema with its outbox, and a Redis key prefix, both removed afterwards.
    func withOutboxAndRedis(
        _ body: (_ clients: [PostgresClient], _ schema: SQLIdentifier, _ outbox: Outbox, _ redis: RedisConnection, _ prefix: String, _ redisURL: String) async throws -> Void
    ) async throws {
        let endpoints = try await TestInfrastructure.shared.endpoints(for: [.postgres, .redis])
        let redisURL = try #require(endpoints.redisURL)
        try await withReliabilitySchema(try #require(endpoints.postgresURL)) { clients, schema in
            try await withRedisKeyPrefix(redisURL) { redis, prefix in
                try await body(clients, schema, Outbox(client: clients[0], schema: schema), redis, prefix, redisURL)
            }
        }
    }

    @Test("a relay publishes 500 outbox rows to a Redis stream, each once, with the envelope and its ids as fields")
    func stream() async throws {
        try await withOutboxAndRedis { clients, schema, outbox, redis, prefix, redisURL in
            let stream = prefix + "orders"
            let ids = try await enqueue(outbox, count: 500, subject: stream)
            let sink = try RedisSink(client: try RedisClient(url: redisURL))
            let relay = try OutboxRelay(client: clients[0], schema: schema, sink: sink, options: .init(batchSize: 64))
            let pass = try await relay.drain()
            #expect(pass.published == 500 && pass.failed == 0, "\(pass)")
            #expect(try await outbox.statusCounts() == ["published": 500])

            #expect(try await redis.streamLength(stream) == 500)
            #expect(try await redis.createGroup("check", on: stream))
            let entries = try await redis.readGroup("check", consumer: "c", stream: stream, count: 1_000)
            #expect(entries.compactMap { $0.text("event_id") }.sorted() == ids.sorted())
            let first = try #require(entries.first { $0.text("event_id") == "order-3" })
            #expect(first.text("event_type") == "OrderPlaced")
            #expect(first.text("aggregate_id") == "order-3")
            #expect(first.text("correlation_id") == "c-3")
            let envelope = try EventEnvelope<OrderPlaced>.decode(try #require(first.fields.first { $0.name == "data" }).value)
            #expect(envelope.payload == OrderPlaced(orderID: "order-3", amountCents: 3))
        }
    }

    @Test("a relay that crashes after publishing and is run again does not duplicate: each event is in the stream once")
    func idempotentAfterCrash() async throws {
        try await withOutboxAndRedis { clients, schema, outbox, redis, prefix, redisURL in
            let stream = prefix + "orders"
            _ = try await enqueue(outbox, count: 100, subject: stream)
            let sink = CrashAfterPublishSink(inner: try RedisSink(client: try RedisClient(url: redisURL)), crashes: 2)
            let relay = try OutboxRelay(client: clients[0], schema: schema, sink: sink,
                                        options: .init(batchSize: 100, claimTimeout: .milliseconds(200), retryBackoff: Self.quickRetries))
            let crashed = try await relay.relayOnce()
            #expect(crashed.published == 0 && crashed.failed == 100, "the relay saw the batch fail: \(crashed)")
            #expect(try await redis.streamLength(stream) == 100, "the failed pass had published everything")
            try await eventually("the crashed rows to be published", timeout: .seconds(20)) {
                _ = try? await relay.relayOnce()
                return try await outbox.statusCounts() == ["published": 100]
            }
            #expect(try await redis.streamLength(stream) == 100, "re-publishing the same events added nothing")
            let markers = try await redis.scanKeys(matching: stream + ":published:*")
            #expect(markers.count == 100)
        }
    }

    @Test("the list target feeds a queue: a worker moving from the right end gets the events oldest first")
    func list() async throws {
        try await withOutboxAndRedis { clients, schema, outbox, redis, prefix, redisURL in
            let queue = prefix + "jobs"
            let ids = try await enqueue(outbox, count: 20, subject: queue, prefix: "job")
            let sink = try RedisSink(client: try RedisClient(url: redisURL), target: .list)
            let relay = try OutboxRelay(client: clients[0], schema: schema, sink: sink, options: .init(batchSize: 5))
            #expect(try await relay.drain().published == 20)
            var taken: [String] = []
            while let job = try await redis.move(from: queue, to: prefix + "processing") {
                taken.append(try EnvelopeHeader.decode(job).id)
            }
            #expect(taken == ids)
        }
    }

    @Test("a row without a key and a key of the wrong type fail alone, are retried and parked; the rest of the batch is published")
    func failures() async throws {
        try await withOutboxAndRedis { clients, schema, outbox, redis, prefix, redisURL in
            try await redis.set(prefix + "not-a-stream", "a string")
            _ = try await enqueue(outbox, count: 3, subject: prefix + "good", prefix: "good")
            _ = try await enqueue(outbox, count: 1, subject: nil, prefix: "keyless")
            _ = try await enqueue(outbox, count: 1, subject: prefix + "not-a-stream", prefix: "wrongtype")
            let sink = try RedisSink(client: try RedisClient(url: redisURL))
            let relay = try OutboxRelay(client: clients[0], schema: schema, sink: sink, options: .init(batchSize: 10, retryBackoff: Self.quickRetries))
            try await eventually("both bad rows to be parked", timeout: .seconds(20)) {
                _ = try await relay.relayOnce()
                return try await outbox.parked().count == 2
            }
            #expect(try await redis.streamLength(prefix + "good") == 3)
            let parked = try await outbox.parked().sorted { $0.eventID < $1.eventID }
            #expect(parked.map(\.eventID) == ["keyless-0", "wrongtype-0"])
            #expect(parked.allSatisfy { $0.retryCount == 3 && $0.maxRetries == 2 })
            #expect(parked[0].lastError.contains("names no Redis key"), "\(parked[0].lastError)")
            #expect(parked[1].lastError.contains("WRONGTYPE"), "\(parked[1].lastError)")
            #expect(try await redis.get(prefix + "not-a-stream") == Array("a string".utf8), "the wrong-type key is untouched")
            #expect(try await redis.scanKeys(matching: prefix + "not-a-stream:published:*") == [], "no marker hides the failed event")
        }
    }

    @Test("bad sink settings are refused")
    func badSettings() async throws {
        let client = try RedisClient(url: "redis://127.0.0.1:1")
        #expect(throws: ProdReadyError.self) { try RedisSink(client: client, deduplicationWindow: .zero) }
        #expect(throws: ProdReadyError.self) { try RedisSink(client: client, target: .stream(maximumLength: 0)) }
    }
}
