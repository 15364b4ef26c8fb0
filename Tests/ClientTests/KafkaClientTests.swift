import Testing
import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka
import TestSupport

@Suite("Kafka producer against a real broker", .requires(.kafka))
struct KafkaClientTests {
    func servers() async throws -> String {
        try #require(try await TestInfrastructure.shared.endpoints(for: [.kafka]).kafkaBootstrapServers)
    }

    @Test("a keyed message with headers round-trips: the delivery report points at it and a reader gets key, value and headers")
    func roundTrip() async throws {
        let servers = try await servers()
        try await withKafkaTopic(servers, partitions: 3) { topic in
            let producer = try KafkaProducer(configuration: .embedded(bootstrapServers: servers))
            let headers = [KafkaHeader("event-type", "OrderPlaced"), KafkaHeader("binary", [0xff, 0x00]), KafkaHeader("empty", nil)]
            let report = try await producer.send(KafkaOutgoing(topic: topic, key: Array("order-7".utf8), value: Array("placed".utf8), headers: headers))
            #expect(report.topic == topic && (0..<3).contains(report.partition))
            let reader = try KafkaConsumer(configuration: .embedded(bootstrapServers: servers), groupID: uniqueName("reader"))
            try await reader.assign(topic: topic, partition: report.partition, offset: report.offset)
            let message = try #require(try await reader.collect(1, within: .seconds(10)).first)
            #expect(message.key == Array("order-7".utf8) && message.value == Array("placed".utf8))
            #expect(message.headers == headers)
            #expect(message.offset == report.offset)
        }
    }

    @Test("a batch of 1,000 keyed messages: every report succeeds, offsets per partition are contiguous, one key stays on one partition; read back in batches")
    func batch() async throws {
        let servers = try await servers()
        try await withKafkaTopic(servers, partitions: 4) { topic in
            let producer = try KafkaProducer(configuration: .embedded(bootstrapServers: servers))
            let messages = (0..<1_000).map { KafkaOutgoing(topic: topic, key: Array("key-\($0 % 10)".utf8), value: Array("m\($0)".utf8)) }
            let reports = try await producer.send(batch: messages).map { try $0.get() }
            #expect(reports.count == 1_000)
            for partition in Set(reports.map(\.partition)) {
                let offsets = reports.filter { $0.partition == partition }.map(\.offset)
                #expect(offsets == Array(offsets.first!..<(offsets.first! + Int64(offsets.count))), "partition \(partition) offsets are contiguous and in send order")
            }
            for key in 0..<10 {
                let partitions = Set(reports.enumerated().filter { $0.offset % 10 == key }.map(\.element.partition))
                #expect(partitions.count == 1, "key-\(key) went to partitions \(partitions)")
            }

            // Reading in batches: one poll hands over up to the limit, in offset order.
            let partition = reports[0].partition
            let inPartition = reports.filter { $0.partition == partition }.count
            let reader = try KafkaConsumer(configuration: .embedded(bootstrapServers: servers), groupID: uniqueName("reader"))
            try await reader.assign(topic: topic, partition: partition, offset: 0)
            var read: [KafkaMessage] = []
            while read.count < inPartition {
                let batch = try await reader.poll(upTo: 7, timeout: .seconds(5))
                #expect(batch.count <= 7)
                if batch.isEmpty { break }
                read += batch
            }
            #expect(read.map(\.offset) == Array(0..<Int64(inPartition)), "all \(inPartition) messages of partition \(partition), in order")
            let zero = await #expect(throws: ProdReadyError.self) { _ = try await reader.poll(upTo: 0, timeout: .milliseconds(1)) }
            #expect(zero?.code == .invalidArgument)
        }
    }

    @Test("malformed input: bad bootstrap servers, topic names, header names; an oversized message is refused")
    func malformedInput() async throws {
        for bad in ["", "localhost", "host:0", "host:port"] {
            let error = #expect(throws: ProdReadyError.self) { try KafkaProducer(configuration: .embedded(bootstrapServers: bad)) }
            #expect(error?.code == .invalidArgument, "'\(bad)': \(String(describing: error))")
        }
        let servers = try await servers()
        let producer = try KafkaProducer(configuration: .embedded(bootstrapServers: servers))
        let cases: [(String, KafkaOutgoing)] = [
            ("empty topic", KafkaOutgoing(topic: "", value: [1])),
            ("topic with a space", KafkaOutgoing(topic: "a b", value: [1])),
            ("topic with a slash", KafkaOutgoing(topic: "a/b", value: [1])),
            ("empty header name", KafkaOutgoing(topic: "fine", value: [1], headers: [KafkaHeader("", "x")])),
            ("message over librdkafka's 1 MB limit", KafkaOutgoing(topic: uniqueName("big"), value: [UInt8](repeating: 0, count: 2 << 20))),
        ]
        for (what, message) in cases {
            let error = await #expect(throws: ProdReadyError.self, "\(what)") { _ = try await producer.send(message) }
            #expect(error?.code == .invalidArgument, "\(what): \(String(describing: error))")
        }
        let outcomes = try await producer.send(batch: cases.map(\.1))
        #expect(outcomes.allSatisfy { if case .failure(let error) = $0 { error.code == .invalidArgument } else { false } }, "in a batch each fails alone")
    }

    @Test("a stopped broker fails sends with a retriable timeout bounded by the delivery timeout; after a restart the same producer delivers again", .requiresEmbedded(.kafka, .s3))
    func outage() async throws {
        try await withPrivateStack([.s3, .kafka], label: "kafka-outage") { stack in
            let servers = try #require(await stack.endpoints.kafkaBootstrapServers)
            var configuration = KafkaConfiguration.embedded(bootstrapServers: servers)
            configuration.deliveryTimeout = .seconds(3)
            let topic = "outage"
            try await KafkaAdmin(configuration: configuration).createTopic(topic, partitions: 1)
            let producer = try KafkaProducer(configuration: configuration)
            _ = try await producer.send(topic: topic, key: nil, value: Array("before".utf8))

            try await stack.stop(.kafka)
            let clock = ContinuousClock()
            let started = clock.now
            let error = await #expect(throws: ProdReadyError.self) { _ = try await producer.send(topic: topic, key: nil, value: Array("during".utf8)) }
            let elapsed = clock.now - started
            #expect(error?.isRetriable == true, "\(String(describing: error))")
            #expect(error?.code == .timeout, "\(String(describing: error))")
            #expect(elapsed >= .seconds(2) && elapsed < .seconds(6), "failed after \(elapsed): the 3 s delivery timeout bounds it")

            try await stack.start(.kafka)
            // The first sends after the restart may still fail (a fenced producer id is replaced, see KafkaProducer);
            // each failure is a retriable error, and the same producer object delivers again.
            let report = try await eventually("the same producer to deliver again after the restart", timeout: .seconds(60), interval: .milliseconds(200)) { () -> PollOutcome<KafkaDeliveryReport> in
                do {
                    return .done(try await producer.send(topic: topic, key: nil, value: Array("after".utf8)))
                } catch let error as ProdReadyError where error.isRetriable {
                    return .pending("\(error)")
                }
            }
            let reader = try KafkaConsumer(configuration: configuration, groupID: "outage-reader")
            try await reader.assign([KafkaTopicPartition(topic, 0): .beginning])
            let texts = try await reader.readUntilIdle(atMost: 10, idle: .seconds(3), within: .seconds(30)).map(\.text)
            #expect(texts.first == "before" && texts.last == "after" && report.offset == Int64(texts.count - 1), "read back \(texts), the delivery report said offset \(report.offset)")
            #expect(!texts.contains("during") || texts.filter { $0 == "during" }.count == 1, "the timed-out message is stored at most once: \(texts)")
        }
    }
}
