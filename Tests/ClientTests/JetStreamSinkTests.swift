import Testing
import PostgresNIO
import ProdReadyCore
import ProdReadyPostgres
import ProdReadyInfra
import ProdReadyNATS
import ProdReadyReliability
import ProdReadySinks
import TestSupport

@Suite("Outbox → JetStream sink, real Postgres and nats-server", .requires(.postgres, .nats))
struct JetStreamSinkTests {
    static let quickRetries = Backoff(base: .milliseconds(5), cap: .milliseconds(20))

    func enqueue(_ outbox: Outbox, _ range: Range<Int>, subject: String?, prefix: String = "order") async throws {
        let messages = try range.map { index in
            try OutboxMessage(
                EventEnvelope(id: "\(prefix)-\(index)", aggregateID: "\(prefix)-\(index % 7)", sequence: Int64(index), payload: OrderPlaced(orderID: "\(prefix)-\(index)", amountCents: index)),
                source: "orders", subject: subject, maxRetries: 2
            )
        }
        try await outbox.transaction { try await $0.enqueue(contentsOf: messages) }
    }

    func readAll(_ nats: NATSConnection, _ stream: JetStreamStreamConfiguration) async throws -> [JetStreamMessage] {
        let consumer = try await nats.pullSubscribe(subject: stream.name.lowercased() + ".>", consumer: .init(durable: "check"))
        var messages: [JetStreamMessage] = []
        while true {
            let batch = try await consumer.fetch(batch: 500, timeout: .milliseconds(500))
            if batch.isEmpty { return messages }
            try await nats.acknowledge(batch)
            messages += batch
        }
    }

    /// A migrated schema with its outbox, and a JetStream stream, both removed afterwards.
    func withOutboxAndStream(
        _ body: (_ clients: [PostgresClient], _ schema: SQLIdentifier, _ outbox: Outbox, _ nats: NATSConnection, _ stream: JetStreamStreamConfiguration) async throws -> Void
    ) async throws {
        let endpoints = try await TestInfrastructure.shared.endpoints(for: [.postgres, .nats])
        try await withReliabilitySchema(try #require(endpoints.postgresURL)) { clients, schema in
            try await withJetStream(try #require(endpoints.natsURL)) { nats, stream in
                try await body(clients, schema, Outbox(client: clients[0], schema: schema), nats, stream)
            }
        }
    }

    @Test("a relay publishes 300 rows to JetStream with Nats-Msg-Id = event id, each stored once")
    func publishes() async throws {
        try await withOutboxAndStream { clients, schema, outbox, nats, stream in
            try await enqueue(outbox, 0..<300, subject: stream.name.lowercased() + ".orders")
            let relay = try OutboxRelay(client: clients[0], schema: schema, sink: try JetStreamSink(connection: nats), options: .init(batchSize: 128))
            #expect(try await relay.drain().published == 300)
            #expect(try await outbox.statusCounts() == ["published": 300])
            let stored = try await readAll(nats, stream)
            #expect(stored.compactMap(\.messageID) == (0..<300).map { "order-\($0)" }, "every event once, in outbox order")
            let envelope = try EventEnvelope<OrderPlaced>.decode(stored[42].payload)
            #expect(envelope.id == "order-42" && envelope.payload.amountCents == 42)
        }
    }

    @Test("re-publishing a batch whose outcome was lost stores nothing twice: the stream answers duplicates")
    func deduplicated() async throws {
        try await withOutboxAndStream { clients, schema, outbox, nats, stream in
            try await enqueue(outbox, 0..<100, subject: stream.name.lowercased() + ".orders")
            let sink = CrashAfterPublishSink(inner: try JetStreamSink(connection: nats), crashes: 2)
            let relay = try OutboxRelay(client: clients[0], schema: schema, sink: sink, options: .init(batchSize: 100, retryBackoff: Self.quickRetries))
            try await eventually("every row to be published despite two lost outcomes", timeout: .seconds(20)) {
                _ = try await relay.relayOnce()
                return try await outbox.statusCounts() == ["published": 100]
            }
            #expect(try await readAll(nats, stream).count == 100, "published three times, stored once")
        }
    }

    @Test("rows without a subject, with a wildcard subject or with no stream behind the subject are parked alone")
    func badRows() async throws {
        try await withOutboxAndStream { clients, schema, outbox, nats, stream in
            try await enqueue(outbox, 0..<3, subject: stream.name.lowercased() + ".orders", prefix: "good")
            try await enqueue(outbox, 0..<1, subject: nil, prefix: "nosubject")
            try await enqueue(outbox, 0..<1, subject: stream.name.lowercased() + ".*", prefix: "wildcard")
            try await enqueue(outbox, 0..<1, subject: uniqueName("nostream").replacingAll("-", with: "_") + ".x", prefix: "nostream")
            let sink = try JetStreamSink(connection: nats, ackTimeout: .seconds(1))
            let relay = try OutboxRelay(client: clients[0], schema: schema, sink: sink, options: .init(batchSize: 10, retryBackoff: Self.quickRetries))
            try await eventually("the three bad rows to be parked", timeout: .seconds(30)) {
                _ = try await relay.relayOnce()
                return try await outbox.parked().count == 3
            }
            let parked = try await outbox.parked().sorted { $0.eventID < $1.eventID }
            #expect(parked.map(\.eventID) == ["nostream-0", "nosubject-0", "wildcard-0"])
            #expect(parked[0].lastError.contains("no stream captures this subject"), "\(parked[0].lastError)")
            #expect(parked[1].lastError.contains("names no JetStream subject"), "\(parked[1].lastError)")
            #expect(parked[2].lastError.contains("wildcard"), "\(parked[2].lastError)")
            #expect(try await readAll(nats, stream).compactMap(\.messageID) == ["good-0", "good-1", "good-2"])
        }
    }
}
