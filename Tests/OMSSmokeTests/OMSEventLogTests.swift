import Testing
import Foundation
import Logging
import OMSContract
import OMSService
import PostgresNIO
import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka
import ProdReadyPostgres
import ProdReadyReliability
import ProdReadyS3
import TestSupport

/// An OMS event log of its own for one test: a bucket, a migrated schema and the Kafka topics of a prefix.
struct EventLogFixture: Sendable {
    let store: OMSEventStore
    let postgres: PostgresClient
    let schema: SQLIdentifier
    let kafkaServers: String
    let topics: OMSTopics

    func publisher(gapTimeout: Duration = .seconds(30)) throws -> OMSPublisher {
        OMSPublisher(
            store: store, postgres: postgres, schema: schema, producer: try KafkaProducer(configuration: .embedded(bootstrapServers: kafkaServers)),
            settings: .init(topics: topics, gapTimeout: gapTimeout), logger: Logger(label: "oms-publisher-test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    /// A command event of `database` for instance `id`.
    static func command(_ database: String, _ id: String, payload: JSONValue = ["name": "x"]) -> OMSEvent {
        OMSEvent(
            eventID: "cmd-\(id)", kind: .command, eventType: "CREATE_INSTANCE", database: database, aggregateID: "\(database):Product:\(id)",
            aggregateSequence: 1, commandID: "cmd-\(id)", actor: "tester", tenant: "t1", payload: payload)
    }

    /// The event ids on the commands topic, in the order read (each topic has one partition, so that is the
    /// publish order), until `count` arrived or 20 s passed.
    func publishedCommandIDs(count: Int) async throws -> [String] {
        let reader = try KafkaConsumer(configuration: .embedded(bootstrapServers: kafkaServers), groupID: uniqueName("reader"))
        try await reader.subscribe(topics: [topics.commands])
        defer { Task { try? await reader.close() } }
        let messages = try await reader.collect(count, within: .seconds(20))
        return try messages.map { try OMSEvent.decode($0.value).eventID }
    }
}

func withEventLog<Result: Sendable>(_ body: (EventLogFixture) async throws -> Result) async throws -> Result {
    let endpoints = try await TestInfrastructure.shared.endpoints(for: [.postgres, .s3, .kafka])
    let url = try #require(endpoints.postgresURL)
    let servers = try #require(endpoints.kafkaBootstrapServers)
    let admin = try KafkaAdmin(configuration: .embedded(bootstrapServers: servers, clientID: "prodready-tests"))
    let topics = OMSTopics(prefix: uniqueName("oms") + "_")
    for topic in [topics.commands, topics.events] { try await admin.createTopic(topic, partitions: 1, timeout: .seconds(30)) }
    let schema = try SQLIdentifier(uniqueName("oms").replacingAll("-", with: "_"))
    return try await withS3Bucket(try #require(endpoints.s3)) { s3, bucket in
        try await withPostgresClients(url, count: 1, maximumConnections: 8) { clients in
            try await OMSSchema.runner(schema: schema).run(on: clients[0])
            let allocator = try SequenceAllocator(client: clients[0], schema: schema, aggregateType: OMSEventStore.allocatorType)
            let fixture = EventLogFixture(
                store: OMSEventStore(s3: s3, bucket: bucket, allocator: allocator), postgres: clients[0], schema: schema, kafkaServers: servers, topics: topics)
            return try await runThenCleanUp({ try await body(fixture) }, cleanUp: {
                try await clients[0].query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(schema.quoted) CASCADE"), logger: testLogger)
                if try await kafkaTopicsMayBeDeleted() { for topic in [topics.commands, topics.events] { try await admin.deleteTopic(topic) } }
            })
        }
    }
}

@Suite("OMS event store and publisher on real S3, Postgres and Kafka", .requires(.postgres, .s3, .kafka))
struct OMSEventLogTests {
    @Test("appends are create-only and ordered: 20 concurrent appends get sequences 1…20, one object each; a repeated id with the same content returns the first result; other content is refused as event_id_reuse")
    func appends() async throws {
        try await withEventLog { log in
            let outcomes = try await withThrowingTaskGroup(of: OMSEventStore.AppendOutcome.self) { group in
                for index in 1...20 { group.addTask { try await log.store.append(EventLogFixture.command("shop", "p\(index)")) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outcomes.allSatisfy { if case .appended = $0 { true } else { false } })
            #expect(outcomes.map(\.entry.sequence).sorted() == Array(1...20))
            let keys = try await log.store.keys(database: "shop", after: 0)
            #expect(keys.compactMap(OMSEventStore.sequence(ofKey:)) == Array(1...20), "\(keys)")
            for key in keys {
                let event = try await log.store.read(key: key)
                #expect(key == OMSEventStore.eventKey(database: "shop", sequence: event.sequence, eventID: event.eventID))
            }

            let retry = try await log.store.append(EventLogFixture.command("shop", "p3"))
            let first = try #require(outcomes.first { $0.entry.key.hasSuffix("-cmd-p3.json") })
            #expect(retry == .duplicate(first.entry), "an idempotent retry answers the first result")
            let reuse = await #expect(throws: EventIDReuse.self) { try await log.store.append(EventLogFixture.command("shop", "p3", payload: ["name": "other"])) }
            #expect(reuse?.storedKey == first.entry.key)
            #expect(try await log.store.keys(database: "shop", after: 0).count == 20, "neither the retry nor the reuse wrote an event")
        }
    }

    @Test("a late writer is waited for: with sequence 2 reserved and unwritten the publisher stops at 1; once 2 is written, 2 and 3 follow, each once, in order")
    func lateWriter() async throws {
        try await withEventLog { log in
            let ledger = OperationLedger()
            _ = try await log.store.append(EventLogFixture.command("shop", "a"))
            let reserved = try await log.store.reserve(database: "shop")
            #expect(reserved == 2)
            _ = try await log.store.append(EventLogFixture.command("shop", "c"))
            ["cmd-a", "cmd-b", "cmd-c"].forEach(ledger.acknowledged)

            let publisher = try log.publisher(gapTimeout: .seconds(60))
            #expect(try await publisher.publishRound().published == 1)
            #expect(try await publisher.publishRound().published == 0, "sequence 3 waits behind the gap at 2")
            #expect(try await publisher.checkpoint(database: "shop") == 1)

            _ = try await log.store.write(EventLogFixture.command("shop", "b"), at: reserved)
            #expect(try await publisher.publishRound().published == 2)
            #expect(try await publisher.checkpoint(database: "shop") == 3)
            let published = try await log.publishedCommandIDs(count: 3)
            #expect(published == ["cmd-a", "cmd-b", "cmd-c"], "publish order is sequence order")
            expectNoLoss(try await LossAccounting.converge(ledger, timeout: .seconds(1)) { published }, "late writer")
        }
    }

    @Test("an abandoned sequence is closed by a tombstone after the gap timeout and the tail moves on; its late writer is refused and its retry lands at a new sequence; a writer holding the slot loses its key to the tombstone")
    func abandonedSequence() async throws {
        try await withEventLog { log in
            let ledger = OperationLedger()
            _ = try await log.store.append(EventLogFixture.command("shop", "a"))
            let abandoned = try await log.store.reserve(database: "shop")
            _ = try await log.store.append(EventLogFixture.command("shop", "c"))
            ["cmd-a", "cmd-c"].forEach(ledger.acknowledged)

            let publisher = try log.publisher(gapTimeout: .milliseconds(300))
            let closed = try await eventually("the publisher to close sequence \(abandoned) and pass it", timeout: .seconds(15), interval: .milliseconds(50)) {
                _ = try await publisher.publishRound()
                let checkpoint = try await publisher.checkpoint(database: "shop")
                return checkpoint == 3 ? .done(checkpoint) : .pending("checkpoint \(checkpoint)")
            }
            #expect(closed == 3)
            let tombstoneKey = OMSEventStore.eventKey(database: "shop", sequence: abandoned, eventID: "tombstone")
            #expect(try await log.store.read(key: tombstoneKey).kind == .tombstone)

            // The writer that reserved 2 comes back: refused; a plain append of the same event takes sequence 4.
            await #expect(throws: SequenceClosed(database: "shop", sequence: abandoned)) {
                _ = try await log.store.write(EventLogFixture.command("shop", "b"), at: abandoned)
            }
            let retried = try await log.store.append(EventLogFixture.command("shop", "b"))
            #expect(retried.entry.sequence == 4)
            ledger.acknowledged("cmd-b")

            // A writer that took its slot and stalled before its event: the tombstone takes its very key.
            let stalled = try await log.store.reserve(database: "shop")
            #expect(try await log.store.takeSlot(database: "shop", sequence: stalled, owner: "cmd-d") == "cmd-d")
            #expect(try await log.store.close(database: "shop", sequence: stalled, reason: "test") == .tombstoned(key: OMSEventStore.eventKey(database: "shop", sequence: stalled, eventID: "cmd-d")))
            let stalledWrite = await #expect(throws: SequenceClosed.self) { _ = try await log.store.write(EventLogFixture.command("shop", "d"), at: stalled) }
            #expect(stalledWrite?.sequence == stalled)

            _ = try await publisher.publishRound()
            #expect(try await publisher.checkpoint(database: "shop") == stalled)
            let published = try await log.publishedCommandIDs(count: 3)
            expectNoLoss(try await LossAccounting.converge(ledger, timeout: .seconds(1)) { published }, "abandoned sequence")
            #expect(published == ["cmd-a", "cmd-c", "cmd-b"], "tombstones are not published")
        }
    }

    @Test("a writer whose event S3 refused gives its slot up, and the publisher closes that sequence in its next round instead of after the gap timeout (60 s here); the command's retry lands at a new sequence")
    func refusedWriteHandsSlotOver() async throws {
        try await withEventLog { log in
            let ledger = OperationLedger()
            _ = try await log.store.append(EventLogFixture.command("shop", "a"))
            // The same allocator and slots, but an S3 endpoint nothing listens on: the event PUT is refused.
            let unreachable = S3Client(configuration: try S3Configuration(endpoint: "http://127.0.0.1:\(try LoopbackPort.free())", accessKey: "a", secretKey: "b", region: "us-east-1"))
            let refusedStore = OMSEventStore(s3: unreachable, bucket: log.store.bucket, allocator: log.store.allocator)
            let refused = await #expect(throws: ProdReadyError.self) { _ = try await refusedStore.append(EventLogFixture.command("shop", "b"), checkedAbsent: true) }
            #expect(refused?.code == .connectionFailed)
            _ = try await log.store.append(EventLogFixture.command("shop", "c"))
            ["cmd-a", "cmd-c"].forEach(ledger.acknowledged)

            let publisher = try log.publisher(gapTimeout: .seconds(60))
            let first = try await publisher.publishRound()
            #expect(first.published == 1, "cmd-a goes out; sequence 2 is the gap")
            #expect(first.closed == [OMSEventStore.eventKey(database: "shop", sequence: 2, eventID: "tombstone")], "the refused writer's sequence is closed at once, not after 60 s")
            let second = try await publisher.publishRound()
            #expect(second.published == 1)
            #expect(try await publisher.checkpoint(database: "shop") == 3)

            let retried = try await log.store.append(EventLogFixture.command("shop", "b"))
            #expect(retried.entry.sequence == 4)
            ledger.acknowledged("cmd-b")
            _ = try await publisher.publishRound()
            let published = try await log.publishedCommandIDs(count: 3)
            #expect(published == ["cmd-a", "cmd-c", "cmd-b"])
            expectNoLoss(try await LossAccounting.converge(ledger, timeout: .seconds(1)) { published }, "refused write")
        }
    }

    @Test("sequences abandoned together are closed together: once the first of three reserved and never written sequences timed out, the other two are closed at the next rounds, not a timeout each")
    func abandonedRun() async throws {
        try await withEventLog { log in
            let ledger = OperationLedger()
            _ = try await log.store.append(EventLogFixture.command("shop", "a"))
            for _ in 0..<3 { _ = try await log.store.reserve(database: "shop") }
            _ = try await log.store.append(EventLogFixture.command("shop", "e"))
            ["cmd-a", "cmd-e"].forEach(ledger.acknowledged)
            let gapTimeout = Duration.seconds(4)
            let publisher = try log.publisher(gapTimeout: gapTimeout)
            let clock = ContinuousClock()
            var closings: [ContinuousClock.Instant] = []
            let deadline = clock.now + .seconds(60)
            while closings.count < 3 {
                guard clock.now < deadline else {
                    Issue.record("the publisher closed \(closings.count) of the 3 abandoned sequences within 60 s")
                    return
                }
                let round = try await publisher.publishRound()
                closings += round.closed.map { _ in clock.now }
                if round.closed.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            }
            // Round by round the counted time is the rounds' own (slow on a loaded machine), never another timeout:
            // one timeout each would put 8 s between the first closing and the third.
            let spread = closings[2] - closings[0]
            #expect(spread < gapTimeout, "the second and third abandoned sequences were closed \(spread) after the first (gap timeout \(gapTimeout))")
            let checkpoint = try await eventually("the checkpoint to reach 5", timeout: .seconds(30), interval: .milliseconds(20)) {
                _ = try await publisher.publishRound()
                let checkpoint = try await publisher.checkpoint(database: "shop")
                return checkpoint == 5 ? .done(checkpoint) : .pending("checkpoint \(checkpoint)")
            }
            #expect(checkpoint == 5)
            let published = try await log.publishedCommandIDs(count: 2)
            expectNoLoss(try await LossAccounting.converge(ledger, timeout: .seconds(1)) { published }, "abandoned run")
        }
    }
}
