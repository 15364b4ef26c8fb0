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
        let configuration = KafkaConfiguration.embedded(bootstrapServers: servers)
        let topic = uniqueName("group")
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
