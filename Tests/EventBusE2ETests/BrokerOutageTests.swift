import Testing
import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka
import TestSupport

/// EventBusE2E replays after a broker outage. The first check: what the broker acknowledged before an
/// outage is readable after it (the embedded broker keeps its log in an S3 server of its own).
@Suite("Event bus: broker outage", .requiresEmbedded(.kafka, .s3))
struct BrokerOutageTests {
    @Test("acknowledged messages are all readable after the broker is SIGKILLed and restarted")
    func acknowledgedMessagesSurviveBrokerCrash() async throws {
        try await withPrivateStack([.kafka], label: "eventbus") { stack in
            let servers = try #require(await stack.endpoints.kafkaBootstrapServers)
            let configuration = KafkaConfiguration.embedded(bootstrapServers: servers)
            let topic = uniqueName("bus")
            var partition: Int32 = 0
            do {
                let producer = try KafkaProducer(configuration: configuration)
                for n in 1...100 {
                    partition = try await producer.send(topic: topic, key: Array("reducer".utf8), value: Array("\(n)".utf8)).partition
                }
            }
            try await stack.kill(.kafka)
            try await stack.start(.kafka)
            let consumer = try KafkaConsumer(configuration: configuration, groupID: uniqueName("bus"))
            try await consumer.assign(topic: topic, partition: partition, offset: 0)
            let values = try await consumer.collect(100, within: .seconds(30)).map { Int($0.text) ?? -1 }
            try await consumer.close()
            #expect(values == Array(1...100))
        }
    }
}
