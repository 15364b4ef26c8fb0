import Testing
import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka
import TestSupport

@Suite("Kafka consumer and admin against a real broker", .requires(.kafka))
struct KafkaConsumerTests {
    func servers() async throws -> String {
        try #require(try await TestInfrastructure.shared.endpoints(for: [.kafka]).kafkaBootstrapServers)
    }

    /// Produces `count` messages `m0`, `m1`, … keyed so they spread over the topic's partitions.
    func produce(_ count: Int, to topic: String, servers: String, from first: Int = 0) async throws -> [KafkaDeliveryReport] {
        let producer = try KafkaProducer(configuration: .embedded(bootstrapServers: servers))
        let messages = (first..<first + count).map { KafkaOutgoing(topic: topic, key: Array("k\($0)".utf8), value: Array("m\($0)".utf8)) }
        return try await producer.send(batch: messages).map { try $0.get() }
    }

    @Test("a group member reads its messages as an async sequence, stores offsets after processing and reports its assignment; the next member resumes after the stored ones")
    func sequenceStoreAndRebalanceEvents() async throws {
        let servers = try await servers()
        try await withKafkaTopic(servers, partitions: 2) { topic in
            _ = try await produce(20, to: topic, servers: servers)
            let group = uniqueName("g")
            let first = try KafkaConsumer(configuration: .embedded(bootstrapServers: servers), groupID: group)
            try await first.subscribe(topics: [topic])
            var processed: [String] = []
            for try await message in first.messages(batch: 5) {
                processed.append(message.text)
                try await first.store([message])
                if processed.count == 12 { break }
            }
            try await first.commitStored()
            let assignment = try await first.assignment()
            #expect(assignment == [KafkaTopicPartition(topic, 0), KafkaTopicPartition(topic, 1)], "the lone member holds both partitions: \(assignment)")
            try await first.close()

            var events: [KafkaRebalanceEvent] = []
            for await event in first.rebalanceEvents {
                events.append(event)
                if case .revoked = event { break }
            }
            let both: Set = [KafkaTopicPartition(topic, 0), KafkaTopicPartition(topic, 1)]
            #expect(events.count == 2, "one assignment, one revocation on leaving: \(events)")
            if case .assigned(let assigned) = events.first { #expect(Set(assigned) == both) } else { Issue.record("first event \(String(describing: events.first))") }
            if case .revoked(let revoked) = events.last { #expect(Set(revoked) == both) } else { Issue.record("last event \(String(describing: events.last))") }

            let second = try KafkaConsumer(configuration: .embedded(bootstrapServers: servers), groupID: group)
            try await second.subscribe(topics: [topic])
            let rest = try await second.collect(8, within: .seconds(30)).map(\.text)
            #expect(Set(processed).count == 12 && Set(rest).count == 8, "first read \(processed.count), second \(rest.count)")
            #expect(Set(processed).isDisjoint(with: rest), "the second member re-read stored messages: \(Set(processed).intersection(rest))")
            #expect(Set(processed + rest) == Set((0..<20).map { "m\($0)" }))
            let extra = try await second.poll(upTo: 10, timeout: .milliseconds(500))
            #expect(extra.isEmpty, "nothing beyond the 20 produced: \(extra.map(\.text))")
            try await second.close()
        }
    }

    @Test("a member starting from the latest offset reads only what is produced after it joined; once it committed, it resumes there")
    func startFromLatest() async throws {
        let servers = try await servers()
        try await withKafkaTopic(servers, partitions: 2) { topic in
            let old = try await produce(10, to: topic, servers: servers)
            #expect(Set(old.map(\.partition)).count == 2, "the old messages spread over both partitions: \(old.map(\.partition))")
            let group = uniqueName("latest")
            let member = try KafkaConsumer(configuration: .embedded(bootstrapServers: servers), groupID: group, startFromEarliest: false)
            try await member.subscribe(topics: [topic])
            // The assignment, and with it the start position, is applied while the member polls.
            var beforeNew: [KafkaMessage] = []
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(30)
            while try await member.assignment().count < 2 {
                guard clock.now < deadline else { throw ProdReadyError(.timeout, "no assignment of both partitions within 30 s") }
                beforeNew += try await member.poll(upTo: 100, timeout: .milliseconds(200))
            }
            beforeNew += try await member.poll(upTo: 100, timeout: .milliseconds(500))
            #expect(beforeNew.isEmpty, "messages from before the member joined were delivered: \(beforeNew.map(\.text))")

            _ = try await produce(5, to: topic, servers: servers, from: 100)
            var read = try await member.collect(5, within: .seconds(30))
            read += try await member.poll(upTo: 100, timeout: .milliseconds(500))
            #expect(read.map(\.text).sorted() == (100..<105).map { "m\($0)" }.sorted(), "read \(read.map(\.text))")
            try await member.store(read)
            try await member.commitStored()
            try await member.close()

            // Committed offsets win over the start position: the next member reads what came after them.
            _ = try await produce(3, to: topic, servers: servers, from: 200)
            let next = try KafkaConsumer(configuration: .embedded(bootstrapServers: servers), groupID: group, startFromEarliest: false)
            try await next.subscribe(topics: [topic])
            var resumed = try await next.collect(3, within: .seconds(30))
            resumed += try await next.poll(upTo: 100, timeout: .milliseconds(500))
            #expect(resumed.map(\.text).sorted() == (200..<203).map { "m\($0)" }.sorted(), "resumed with \(resumed.map(\.text))")
            try await next.close()

            // A manual reader of a group that never committed, asking for the committed offset, starts at the end too.
            let reader = try KafkaConsumer(configuration: .embedded(bootstrapServers: servers), groupID: uniqueName("never"), startFromEarliest: false)
            try await reader.assign([KafkaTopicPartition(topic, 0): .committed, KafkaTopicPartition(topic, 1): .committed])
            let early = try await reader.poll(upTo: 100, timeout: .seconds(1))
            #expect(early.isEmpty, "a manual reader starting at the end got old messages: \(early.map(\.text))")
            _ = try await produce(4, to: topic, servers: servers, from: 300)
            var fresh = try await reader.collect(4, within: .seconds(30))
            fresh += try await reader.poll(upTo: 100, timeout: .milliseconds(500))
            #expect(fresh.map(\.text).sorted() == (300..<304).map { "m\($0)" }.sorted(), "the manual reader got \(fresh.map(\.text))")
        }
    }

    @Test("a paused partition delivers nothing until resumed, then continues from where it was")
    func pauseAndResume() async throws {
        let servers = try await servers()
        try await withKafkaTopic(servers, partitions: 2) { topic in
            let reports = try await produce(40, to: topic, servers: servers)
            let perPartition = Dictionary(grouping: reports, by: \.partition).mapValues(\.count)
            #expect(perPartition.count == 2, "40 keys spread over both partitions: \(perPartition)")
            let reader = try KafkaConsumer(configuration: .embedded(bootstrapServers: servers), groupID: uniqueName("reader"))
            let paused = KafkaTopicPartition(topic, 0)
            try await reader.assign([paused: .beginning, KafkaTopicPartition(topic, 1): .beginning])
            try await reader.pause([paused])
            let whilePaused = try await reader.collect(40, within: .seconds(3))
            #expect(whilePaused.allSatisfy { $0.partition == 1 }, "partition 0 delivered while paused: \(whilePaused.filter { $0.partition == 0 }.map(\.offset))")
            #expect(whilePaused.count == perPartition[1], "all of partition 1 arrived meanwhile (\(whilePaused.count) of \(perPartition[1] ?? 0))")

            try await reader.resume([paused])
            let afterResume = try await reader.collect(perPartition[0] ?? 0, within: .seconds(10))
            #expect(afterResume.map(\.offset) == Array(0..<Int64(perPartition[0] ?? 0)), "partition 0 from its first offset, in order")
            #expect(afterResume.allSatisfy { $0.partition == 0 })
        }
    }

    @Test("seek moves an assigned partition back to an offset, and to the end so only new messages arrive")
    func seek() async throws {
        let servers = try await servers()
        try await withKafkaTopic(servers, partitions: 1) { topic in
            _ = try await produce(10, to: topic, servers: servers)
            let reader = try KafkaConsumer(configuration: .embedded(bootstrapServers: servers), groupID: uniqueName("reader"))
            let partition = KafkaTopicPartition(topic, 0)
            try await reader.assign([partition: .beginning])
            #expect(try await reader.collect(10, within: .seconds(10)).map(\.offset) == Array(0..<10))

            try await reader.seek([partition: .at(3)])
            #expect(try await reader.collect(7, within: .seconds(10)).map(\.offset) == Array(3..<10), "re-read from offset 3")

            try await reader.seek([partition: .at(8)])
            try await reader.seek([partition: .end])
            _ = try await produce(1, to: topic, servers: servers, from: 100)
            let next = try await reader.collect(1, within: .seconds(10))
            #expect(next.map(\.text) == ["m100"] && next.first?.offset == 10, "after seeking to the end only the new message: \(next.map(\.text))")
        }
    }

    @Test("watermarks and consumer-group lag: nothing committed, then part committed, then everything")
    func watermarksAndLag() async throws {
        let servers = try await servers()
        try await withKafkaTopic(servers, partitions: 1) { topic in
            _ = try await produce(10, to: topic, servers: servers)
            let admin = try KafkaAdmin(configuration: .embedded(bootstrapServers: servers))
            #expect(try await admin.watermarks(topic: topic, partition: 0) == KafkaWatermarks(low: 0, high: 10))

            let group = uniqueName("g")
            let untouched = try await admin.consumerGroupLag(group: group, topic: topic)
            #expect(untouched.map(\.committed) == [nil] && untouched.map(\.lag) == [10], "a group that never committed: \(untouched)")

            let consumer = try KafkaConsumer(configuration: .embedded(bootstrapServers: servers), groupID: group)
            try await consumer.assign([KafkaTopicPartition(topic, 0): .beginning])
            let read = try await consumer.collect(4, within: .seconds(10))
            try await consumer.commit(try #require(read.last))
            let partly = try await admin.consumerGroupLag(group: group, topic: topic)
            #expect(partly.map(\.committed) == [4] && partly.map(\.lag) == [6], "4 of 10 committed: \(partly)")
            #expect(try await consumer.committed([KafkaTopicPartition(topic, 0)]) == [KafkaTopicPartition(topic, 0): 4])

            try await consumer.commit([KafkaTopicPartition(topic, 0): 10])
            #expect(try await admin.consumerGroupLag(group: group, topic: topic).map(\.lag) == [0])
        }
    }

    @Test("with an automatic commit interval only stored offsets are committed: processed-and-stored messages count, merely read ones do not")
    func automaticCommitOfStoredOffsets() async throws {
        let servers = try await servers()
        try await withKafkaTopic(servers, partitions: 1) { topic in
            _ = try await produce(10, to: topic, servers: servers)
            let group = uniqueName("g")
            let partition = KafkaTopicPartition(topic, 0)
            let consumer = try KafkaConsumer(configuration: .embedded(bootstrapServers: servers), groupID: group, autoCommitInterval: .milliseconds(100))
            try await consumer.assign([partition: .beginning])
            let processed = try await consumer.collect(5, within: .seconds(10))
            try await consumer.store(processed)
            try await eventually("the stored offset 5 to be committed in the background", timeout: .seconds(10)) { () -> PollOutcome<Void> in
                let committed = try await consumer.committed([partition])[partition] ?? nil
                return committed == 5 ? .done(()) : .pending("committed \(String(describing: committed))")
            }
            let readOnly = try await consumer.collect(3, within: .seconds(10))
            #expect(readOnly.map(\.offset) == [5, 6, 7])
            // Several commit intervals pass; nothing new was stored, so nothing new may be committed.
            try await Task.sleep(for: .milliseconds(600))
            let committed = try await consumer.committed([partition])[partition] ?? nil
            #expect(committed == 5, "read but unprocessed messages were committed: \(String(describing: committed))")
        }
    }

    @Test("malformed consumer and admin input is refused with invalid_argument or not_found")
    func malformedInput() async throws {
        let servers = try await servers()
        let configuration = KafkaConfiguration.embedded(bootstrapServers: servers)
        let consumer = try KafkaConsumer(configuration: configuration, groupID: uniqueName("bad"))
        let admin = try KafkaAdmin(configuration: configuration)
        try await withKafkaTopic(servers, partitions: 1) { topic in
            let partition = KafkaTopicPartition(topic, 0)
            let cases: [(String, ProdReadyError.Code, @Sendable () async throws -> Void)] = [
                ("empty group id", .invalidArgument, { _ = try KafkaConsumer(configuration: configuration, groupID: "") }),
                ("zero auto-commit interval", .invalidArgument, { _ = try KafkaConsumer(configuration: configuration, groupID: "g", autoCommitInterval: .zero) }),
                ("assign nothing", .invalidArgument, { try await consumer.assign([:]) }),
                ("assign a negative offset", .invalidArgument, { try await consumer.assign([partition: .at(-7)]) }),
                ("assign a negative partition", .invalidArgument, { try await consumer.assign([KafkaTopicPartition(topic, -1): .beginning]) }),
                ("pause nothing", .invalidArgument, { try await consumer.pause([]) }),
                ("seek a partition not assigned", .invalidArgument, { try await consumer.seek([partition: .at(0)]) }),
                ("seek to the committed offset", .invalidArgument, { try await consumer.seek([partition: .committed]) }),
                ("commit a negative offset", .invalidArgument, { try await consumer.commit([partition: -1]) }),
                ("store for a partition not assigned", .invalidArgument, {
                    try await consumer.store([KafkaMessage(topic: topic, partition: 0, offset: 0, key: nil, value: [])])
                }),
                ("lag of an empty group", .invalidArgument, { _ = try await admin.consumerGroupLag(group: "", topic: topic) }),
                ("lag of a malformed topic", .invalidArgument, { _ = try await admin.consumerGroupLag(group: "g", topic: "a b") }),
                ("lag of a topic that does not exist", .notFound, { _ = try await admin.consumerGroupLag(group: "g", topic: uniqueName("missing")) }),
                ("watermarks of a malformed topic", .invalidArgument, { _ = try await admin.watermarks(topic: "", partition: 0) }),
                ("create a topic with a slash", .invalidArgument, { try await admin.createTopic("a/b", partitions: 1) }),
            ]
            for (what, code, call) in cases {
                let error = await #expect(throws: ProdReadyError.self, "\(what)") { try await call() }
                #expect(error?.code == code, "\(what): \(String(describing: error))")
            }
        }
    }
}
