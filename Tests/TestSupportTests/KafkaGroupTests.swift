import Testing
import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka
import TestSupport

@Suite("Kafka consumer group on the shared infrastructure", .requires(.kafka))
struct KafkaGroupTests {
    @Test("a group member receives every produced message; after it commits and leaves, the next member starts after them")
    func groupRoundTripWithCommits() async throws {
        let servers = try #require(try await TestInfrastructure.shared.endpoints(for: [.kafka]).kafkaBootstrapServers)
        try await withKafkaTopic(servers, partitions: 3) { topic in
            try await Self.roundTrip(topic: topic, configuration: .embedded(bootstrapServers: servers))
        }
    }

    static func roundTrip(topic: String, configuration: KafkaConfiguration) async throws {
        let group = uniqueName("g")
        let producer = try KafkaProducer(configuration: configuration)
        for n in 1...10 {
            _ = try await producer.send(topic: topic, key: Array("k\(n)".utf8), value: Array("m\(n)".utf8))
        }

        let first = try await Self.read(count: 10, topic: topic, group: group, configuration: configuration)
        #expect(Set(first) == Set((1...10).map { "m\($0)" }), "the first member received \(first)")

        _ = try await producer.send(topic: topic, key: Array("k11".utf8), value: Array("m11".utf8))
        let second = try await Self.read(count: 1, topic: topic, group: group, configuration: configuration)
        #expect(second == ["m11"], "committed messages were delivered again to the next member: \(second)")
    }

    /// Joins `group`, reads `count` messages committing each, then leaves the group.
    static func read(count: Int, topic: String, group: String, configuration: KafkaConfiguration) async throws -> [String] {
        let consumer = try KafkaConsumer(configuration: configuration, groupID: group)
        try await consumer.subscribe(topics: [topic])
        let messages = try await consumer.collect(count, within: .seconds(30), commit: true)
        try await consumer.close()
        return messages.map(\.text)
    }
}

@Suite("Kafka topics per test", .requires(.kafka))
struct KafkaTopicTests {
    @Test("a topic is created with the partitions asked for, and a deleted topic disappears from the metadata")
    func topicLifecycle() async throws {
        guard try await kafkaTopicsMayBeDeleted() else {
            // On the embedded broker a deletion is only safe where no other client knows the topic (see
            // withKafkaTopic): a private broker whose only client is this admin.
            try await withPrivateStack([.s3, .kafka], label: "topic-delete") { stack in
                try await Self.createAndDelete(servers: try #require(await stack.endpoints.kafkaBootstrapServers))
            }
            return
        }
        try await Self.createAndDelete(servers: try #require(try await TestInfrastructure.shared.endpoints(for: [.kafka]).kafkaBootstrapServers))
    }

    static func createAndDelete(servers: String) async throws {
        let admin = try KafkaAdmin(configuration: .embedded(bootstrapServers: servers))
        let topic = uniqueName("t")
        try await admin.createTopic(topic, partitions: 3)
        let metadata = try await admin.metadata()
        #expect(metadata.topics[topic] == 3, "topic \(topic) partitions: \(String(describing: metadata.topics[topic]))")
        try await admin.deleteTopic(topic)
        // Topic deletion is asynchronous in Kafka: the broker acknowledges it before metadata stops listing it.
        try await eventually("topic \(topic) to disappear after deletion", timeout: .seconds(15)) {
            let partitions = try await admin.metadata().topics[topic]
            return partitions == nil ? .done(true) : .pending("still listed with \(partitions!) partitions")
        }
    }

    @Test("creating a topic twice is refused unless existing topics are allowed; bad arguments are refused")
    func createTwice() async throws {
        let servers = try #require(try await TestInfrastructure.shared.endpoints(for: [.kafka]).kafkaBootstrapServers)
        let admin = try KafkaAdmin(configuration: .embedded(bootstrapServers: servers))
        try await withKafkaTopic(servers) { topic in
            await #expect(throws: ProdReadyError.self) { try await admin.createTopic(topic, partitions: 1) }
            try await admin.createTopic(topic, partitions: 1, allowExisting: true)
        }
        let empty = await #expect(throws: ProdReadyError.self) { try await admin.createTopic("", partitions: 1) }
        #expect(empty?.code == .invalidArgument)
        let zero = await #expect(throws: ProdReadyError.self) { try await admin.createTopic("x", partitions: 0) }
        #expect(zero?.code == .invalidArgument)
    }
}
