import Testing
import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka
import ProdReadyS3
import TestSupport

/// The OMS write side keeps its event store in S3 (the source of truth) and publishes it through Kafka.
/// These first checks pin the two storage guarantees that design relies on, against the real servers.
@Suite("OMS smoke: infrastructure guarantees", .requires(.s3, .kafka))
struct EventStoreInfrastructureTests {
    @Test("an event slot can be written once: a second create-only PUT of the same key is refused")
    func createOnlyEventSlot() async throws {
        let endpoints = try await TestInfrastructure.shared.endpoints(for: [.s3])
        try await withS3Bucket(try #require(endpoints.s3)) { client, bucket in
            let key = "orders/order-1/00000000000000000001.json"
            try await client.putObject(bucket: bucket, key: key, body: Array(#"{"type":"OrderPlaced"}"#.utf8), condition: .ifAbsent)
            let error = await #expect(throws: ProdReadyError.self) {
                try await client.putObject(bucket: bucket, key: key, body: Array(#"{"type":"Conflicting"}"#.utf8), condition: .ifAbsent)
            }
            #expect(error?.code == .preconditionFailed)
            #expect(try await client.getObject(bucket: bucket, key: key).body == Array(#"{"type":"OrderPlaced"}"#.utf8))
        }
    }

    @Test("20 concurrent writers racing for one event slot: exactly one wins")
    func concurrentCreateOnly() async throws {
        let endpoints = try await TestInfrastructure.shared.endpoints(for: [.s3])
        try await withS3Bucket(try #require(endpoints.s3)) { client, bucket in
            let outcomes = await withTaskGroup(of: Result<Int, ProdReadyError>.self) { group in
                for writer in 0..<20 {
                    group.addTask {
                        do {
                            try await client.putObject(bucket: bucket, key: "orders/o/1.json", body: Array("writer \(writer)".utf8), condition: .ifAbsent)
                            return .success(writer)
                        } catch let error as ProdReadyError {
                            return .failure(error)
                        } catch {
                            return .failure(ProdReadyError(.protocolError, "\(error)"))
                        }
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            let winners = outcomes.compactMap { try? $0.get() }
            let refusals = outcomes.compactMap { if case .failure(let error) = $0 { error } else { nil } }
            #expect(winners.count == 1, "winners: \(winners)")
            #expect(refusals.count == 19)
            #expect(refusals.allSatisfy { $0.code == .preconditionFailed }, "refusals: \(refusals.map(\.code))")
            let stored = try await client.getObject(bucket: bucket, key: "orders/o/1.json").body
            #expect(stored == Array("writer \(try #require(winners.first))".utf8))
        }
    }

    @Test("events of one aggregate keep their order through Kafka when keyed by aggregate id")
    func perAggregateOrder() async throws {
        let servers = try #require(try await TestInfrastructure.shared.endpoints(for: [.kafka]).kafkaBootstrapServers)
        try await withKafkaTopic(servers, partitions: 4) { topic in
            try await Self.checkOrder(topic: topic, configuration: .embedded(bootstrapServers: servers))
        }
    }

    static func checkOrder(topic: String, configuration: KafkaConfiguration) async throws {
        let producer = try KafkaProducer(configuration: configuration)
        var partition: Int32 = -1
        for sequence in 1...50 {
            let report = try await producer.send(topic: topic, key: Array("order-7".utf8), value: Array("\(sequence)".utf8))
            if partition == -1 { partition = report.partition }
            #expect(report.partition == partition, "one key must map to one partition")
        }
        let consumer = try KafkaConsumer(configuration: configuration, groupID: uniqueName("oms"))
        try await consumer.assign(topic: topic, partition: partition, offset: 0)
        let sequences = try await consumer.collect(50, within: .seconds(20)).map { Int($0.text) ?? -1 }
        try await consumer.close()
        #expect(sequences == Array(1...50))
    }
}
