import Testing
import PostgresNIO
import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka
import ProdReadyPostgres
import ProdReadyReliability
import ProdReadySinks
import TestSupport

@Suite("Outbox → Kafka sink, real Postgres and broker", .requires(.postgres, .kafka))
struct KafkaSinkTests {
    static let quickRetries = Backoff(base: .milliseconds(5), cap: .milliseconds(20))

    /// A migrated schema with its outbox, and a 3-partition topic, both removed afterwards.
    func withOutboxAndTopic(
        _ body: (_ clients: [PostgresClient], _ schema: SQLIdentifier, _ outbox: Outbox, _ servers: String, _ topic: String) async throws -> Void
    ) async throws {
        let endpoints = try await TestInfrastructure.shared.endpoints(for: [.postgres, .kafka])
        let servers = try #require(endpoints.kafkaBootstrapServers)
        try await withReliabilitySchema(try #require(endpoints.postgresURL)) { clients, schema in
            try await withKafkaTopic(servers, partitions: 3) { topic in
                try await body(clients, schema, Outbox(client: clients[0], schema: schema), servers, topic)
            }
        }
    }

    func enqueue(_ outbox: Outbox, _ range: Range<Int>, subject: String?, prefix: String = "order") async throws {
        let messages = try range.map { index in
            try OutboxMessage(
                EventEnvelope(id: "\(prefix)-\(index)", aggregateID: "agg-\(index % 5)", sequence: Int64(index), correlationID: "c-\(index)",
                              payload: OrderPlaced(orderID: "\(prefix)-\(index)", amountCents: index)),
                source: "orders", subject: subject, maxRetries: 2
            )
        }
        try await outbox.transaction { try await $0.enqueue(contentsOf: messages) }
    }

    func readAll(_ servers: String, _ topic: String, count: Int) async throws -> [KafkaMessage] {
        var messages: [KafkaMessage] = []
        for partition in Int32(0)..<3 {
            let reader = try KafkaConsumer(configuration: .embedded(bootstrapServers: servers), groupID: uniqueName("reader"))
            try await reader.assign(topic: topic, partition: partition, offset: 0)
            messages += try await reader.collect(count - messages.count, within: .seconds(3))
        }
        return messages
    }

    @Test("a relay publishes 300 rows, each once, keyed by aggregate so each aggregate's events keep their order")
    func publishes() async throws {
        try await withOutboxAndTopic { clients, schema, outbox, servers, topic in
            try await enqueue(outbox, 0..<300, subject: topic)
            let sink = KafkaSink(producer: try KafkaProducer(configuration: .embedded(bootstrapServers: servers)))
            let relay = try OutboxRelay(client: clients[0], schema: schema, sink: sink, options: .init(batchSize: 64))
            #expect(try await relay.drain().published == 300)
            #expect(try await outbox.statusCounts() == ["published": 300])

            let messages = try await readAll(servers, topic, count: 300)
            let ids = messages.map { $0.headers.first { $0.name == "event_id" }?.value.map { String(decoding: $0, as: UTF8.self) } ?? "?" }
            #expect(ids.sorted() == (0..<300).map { "order-\($0)" }.sorted(), "every event exactly once")
            for aggregate in 0..<5 {
                let inOrder = messages.filter { $0.key == Array("agg-\(aggregate)".utf8) }
                #expect(Set(inOrder.map(\.partition)).count == 1, "agg-\(aggregate) stays on one partition")
                let sequences = try inOrder.map { try EventEnvelope<OrderPlaced>.decode($0.value).sequence ?? -1 }
                #expect(sequences == sequences.sorted() && sequences.count == 60, "agg-\(aggregate): \(sequences.prefix(5))…")
            }
            let first = try #require(messages.first { $0.headers.contains(KafkaHeader("event_id", "order-7")) })
            #expect(first.headers.contains(KafkaHeader("event_type", "OrderPlaced")) && first.headers.contains(KafkaHeader("correlation_id", "c-7")))
        }
    }

    @Test("rows without a topic or with a malformed topic fail alone and are parked; the rest is published")
    func badRows() async throws {
        try await withOutboxAndTopic { clients, schema, outbox, servers, topic in
            try await enqueue(outbox, 0..<3, subject: topic, prefix: "good")
            try await enqueue(outbox, 0..<1, subject: nil, prefix: "notopic")
            try await enqueue(outbox, 0..<1, subject: "not a topic", prefix: "badtopic")
            let sink = KafkaSink(producer: try KafkaProducer(configuration: .embedded(bootstrapServers: servers)))
            let relay = try OutboxRelay(client: clients[0], schema: schema, sink: sink, options: .init(batchSize: 10, retryBackoff: Self.quickRetries))
            try await eventually("both bad rows to be parked", timeout: .seconds(20)) {
                _ = try await relay.relayOnce()
                return try await outbox.parked().count == 2
            }
            let parked = try await outbox.parked().sorted { $0.eventID < $1.eventID }
            #expect(parked.map(\.eventID) == ["badtopic-0", "notopic-0"])
            #expect(parked[0].lastError.contains("topic names are"), "\(parked[0].lastError)")
            #expect(parked[1].lastError.contains("names no Kafka topic"), "\(parked[1].lastError)")
            #expect(try await outbox.statusCounts()["published"] == 3)
            #expect(try await readAll(servers, topic, count: 3).count == 3)
        }
    }
}
