import Testing
import Foundation
import PostgresNIO
import Synchronization
import ProdReadyCore
import ProdReadyPostgres
import ProdReadyReliability
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

struct OrderPlaced: EventPayload, Equatable {
    static let eventType = "OrderPlaced"
    static let schemaVersion = 1
    var orderID: String
    var amountCents: Int
}

/// The same event name at a later schema version: what a consumer built against v2 would decode.
struct OrderPlacedV2: EventPayload {
    static let eventType = "OrderPlaced"
    static let schemaVersion = 2
    var orderID: String
    var amount: Decimal
}

func orderMessage(_ index: Int, maxRetries: Int = 3) throws -> OutboxMessage {
    let envelope = EventEnvelope(
        id: "order-placed-\(index)", aggregateID: "order-\(index % 10)", sequence: Int64(index / 10 + 1),
        correlationID: "checkout-\(index)", payload: OrderPlaced(orderID: "order-\(index % 10)", amountCents: 100 + index)
    )
    return try OutboxMessage(envelope, source: "oms-write-side", subject: "orders", maxRetries: maxRetries)
}

func enqueueOrders(_ outbox: Outbox, _ range: Range<Int>, maxRetries: Int = 3) async throws {
    for chunk in stride(from: range.lowerBound, to: range.upperBound, by: 500) {
        let messages = try (chunk..<min(chunk + 500, range.upperBound)).map { try orderMessage($0, maxRetries: maxRetries) }
        try await outbox.transaction { try await $0.enqueue(contentsOf: messages) }
    }
}

/// Fails the first `failures` publishes of every event, then hands on to the real sink.
final class FlakySink: OutboxSink {
    let inner: PostgresTableSink
    let failures: Int
    private let attempts = Mutex<[String: Int]>([:])

    init(inner: PostgresTableSink, failures: Int) {
        self.inner = inner
        self.failures = failures
    }

    func attempts(of eventID: String) -> Int { attempts.withLock { $0[eventID] ?? 0 } }

    func publish(_ records: [OutboxRecord]) async throws -> [Result<Void, ProdReadyError>] {
        var passing: [OutboxRecord] = []
        var results: [Result<Void, ProdReadyError>?] = []
        for record in records {
            let attempt = attempts.withLock { counts in
                counts[record.eventID, default: 0] += 1
                return counts[record.eventID]!
            }
            if attempt <= failures {
                results.append(.failure(ProdReadyError(.connectionFailed, "broker unavailable (injected failure \(attempt) of \(failures))", retriable: true)))
            } else {
                passing.append(record)
                results.append(nil)
            }
        }
        if !passing.isEmpty { _ = try await inner.publish(passing) }
        return results.map { $0 ?? .success(()) }
    }
}

@Suite("OMS fast layer: transactional outbox and relay", .requires(.postgres))
struct OutboxTests {
    static let quickRetries = Backoff(base: .milliseconds(5), cap: .milliseconds(20))

    func makeSink(_ client: PostgresClient, _ schema: SQLIdentifier) async throws -> PostgresTableSink {
        let sink = PostgresTableSink(client: client, schema: schema, table: try SQLIdentifier("published"))
        try await sink.prepare()
        return sink
    }

    @Test("an enqueued event commits with its business write, or neither does")
    func enqueueIsTransactional() async throws {
        try await withSchema { clients, schema in
            let outbox = Outbox(client: clients[0], schema: schema)
            try await clients[0].query(PostgresQuery(unsafeSQL: "CREATE TABLE \(schema.quoted).orders (id text PRIMARY KEY)"))
            try await outbox.transaction { transaction in
                try await transaction.connection.query("INSERT INTO \(unescaped: schema.quoted).orders VALUES ('order-1')", logger: testLogger)
                try await transaction.enqueue(try orderMessage(1))
            }
            struct Abort: Error {}
            await #expect(throws: Abort.self) {
                try await outbox.transaction { transaction in
                    try await transaction.connection.query("INSERT INTO \(unescaped: schema.quoted).orders VALUES ('order-2')", logger: testLogger)
                    try await transaction.enqueue(try orderMessage(2))
                    throw Abort()
                }
            }
            #expect(try await count(clients[0], schema, "orders") == 1)
            #expect(try await count(clients[0], schema, "outbox_events") == 1)
            #expect(try await count(clients[0], schema, "outbox_events", where: "event_id = 'order-placed-1' AND status = 'pending' AND subject = 'orders' AND correlation_id = 'checkout-1'") == 1)

            // The same event id twice is refused with its id named, and the transaction can still commit.
            let duplicate = await #expect(throws: ProdReadyError.self) {
                try await outbox.transaction { try await $0.enqueue(try orderMessage(1)) }
            }
            #expect(duplicate?.code == .preconditionFailed)
            #expect(duplicate?.message.contains("order-placed-1") == true)

            // A transaction object kept past its closure cannot enqueue.
            nonisolated(unsafe) var leaked: OutboxTransaction?
            try await outbox.transaction { leaked = $0 }
            let late = await #expect(throws: ProdReadyError.self) { try await leaked?.enqueue(try orderMessage(3)) }
            #expect(late?.code == .invalidArgument)
            #expect(try await count(clients[0], schema, "outbox_events") == 1)
        }
    }

    @Test("an event recording no write of this database, enqueued alone through the group writer, is one statement: pending with its fields, a repeated id refused and nothing else written")
    func enqueueAlone() async throws {
        try await withSchema { clients, schema in
            let writer = OutboxGroupWriter(client: clients[0], schema: schema)
            try await writer.enqueue(try orderMessage(1))
            try await writer.enqueue(try orderMessage(2))
            #expect(writer.counts.statements == 2 && writer.counts.stored == 2, "\(writer.counts)")
            #expect(try await count(clients[0], schema, "outbox_events", where: "status = 'pending' AND subject = 'orders' AND correlation_id IN ('checkout-1', 'checkout-2')") == 2)
            let duplicate = await #expect(throws: ProdReadyError.self) {
                try await writer.enqueue(try orderMessage(2))
            }
            #expect(duplicate?.code == .preconditionFailed)
            #expect(duplicate?.message.contains("order-placed-2") == true)
            #expect(try await count(clients[0], schema, "outbox_events") == 2)
        }
    }

    @Test("the group writer: 300 messages enqueued at once are each stored once, in far fewer INSERTs than messages; an id repeated in the burst or after it is refused (precondition_failed) and stored once")
    func groupWriter() async throws {
        try await withSchema { clients, schema in
            let writer = OutboxGroupWriter(client: clients[0], schema: schema)
            let messages = try (0..<300).map { try orderMessage($0) }
            let burst = messages + [messages[7]]
            let outcomes = await withTaskGroup(of: (id: String, refusal: ProdReadyError.Code?).self) { group in
                for message in burst {
                    group.addTask {
                        do {
                            try await writer.enqueue(message)
                            return (message.eventID, nil)
                        } catch {
                            return (message.eventID, (error as? ProdReadyError)?.code ?? ProdReadyError.Code("not a ProdReadyError: \(error)"))
                        }
                    }
                }
                return await group.reduce(into: [(id: String, refusal: ProdReadyError.Code?)]()) { $0.append($1) }
            }
            let stored = outcomes.filter { $0.refusal == nil }.map(\.id)
            let refused = outcomes.filter { $0.refusal != nil }
            #expect(stored.count == 300 && Set(stored).count == 300, "\(stored.count) stored, \(Set(stored).count) distinct")
            #expect(refused.map(\.id) == ["order-placed-7"] && refused.first?.refusal == .preconditionFailed, "refused: \(refused)")
            #expect(try await count(clients[0], schema, "outbox_events", where: "status = 'pending'") == 300)
            let counts = writer.counts
            // One INSERT per message would be 300: the burst waits behind the first statement and goes in a few.
            #expect(counts.stored == 300 && counts.statements < 30, "\(counts.statements) INSERTs for \(counts.stored) messages")
            let again = await #expect(throws: ProdReadyError.self) { try await writer.enqueue(messages[0]) }
            #expect(again?.code == .preconditionFailed)
            #expect(again?.message.contains("order-placed-0") == true)
            #expect(try await count(clients[0], schema, "outbox_events") == 300)
        }
    }

    @Test("4 relays over 2,000 rows: every row published exactly once")
    func concurrentRelays() async throws {
        try await withSchema(pools: 4, maximumConnections: 2) { clients, schema in
            let outbox = Outbox(client: clients[0], schema: schema)
            try await enqueueOrders(outbox, 0..<2_000)
            let sink = try await makeSink(clients[0], schema)
            let relays = try clients.enumerated().map { index, client in
                try OutboxRelay(client: client, schema: schema, sink: PostgresTableSink(client: client, schema: schema, table: sink.table),
                                options: .init(relayID: "relay-\(index)", batchSize: 100))
            }
            let published = try await withThrowingTaskGroup(of: Int.self) { group in
                for relay in relays {
                    group.addTask {
                        let total = try await relay.drain()
                        #expect(total.failed == 0 && total.parked == 0)
                        return total.published
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(published.reduce(0, +) == 2_000, "per relay: \(published)")
            #expect(try await count(clients[0], schema, "published") == 2_000)
            #expect(try await queryInt(clients[0], PostgresQuery(unsafeSQL: "SELECT count(DISTINCT event_id)::int8 FROM \(schema.quoted).published")) == 2_000)
            #expect(try await outbox.statusCounts() == ["published": 2_000])
            #expect(try await count(clients[0], schema, "outbox_events", where: "published_at IS NULL OR claimed_by IS NOT NULL") == 0)
        }
    }

    @Test("a relay SIGKILLed right after claiming strands nothing: its rows are published once the claim times out")
    func killedRelayDoesNotStrandRows() async throws {
        let url = try #require(try await TestInfrastructure.shared.endpoints(for: [.postgres]).postgresURL)
        try await withSchema { clients, schema in
            let outbox = Outbox(client: clients[0], schema: schema)
            try await enqueueOrders(outbox, 0..<300)
            let sink = try await makeSink(clients[0], schema)
            let claimTimeout = Duration.milliseconds(2_000)
            let doomed = try ServiceProcess(
                name: "doomed-relay",
                executable: try ServiceProcess.builtExecutable(named: "prodready"),
                arguments: [
                    "outbox", "relay", "--database-url", url, "--schema", schema.name, "--sink-table", sink.table.name,
                    "--relay-id", "doomed", "--batch-size", "100", "--claim-timeout-ms", "\(claimTimeout.wholeMilliseconds)",
                    "--stall-after-claim-ms", "600000",
                ],
                readiness: .logLine("relay doomed ready")
            )
            try await doomed.start()
            try await eventually("the child relay to claim a batch", timeout: .seconds(20)) {
                try await count(clients[0], schema, "outbox_events", where: "status = 'processing' AND claimed_by = 'doomed'") == 100
            }
            // The claim's deadline as the server set it: the survivor may publish these rows only after it.
            var doomedRows: [Int64] = []
            var claimedUntil: Date?
            for try await (id, until) in try await clients[0].query(
                "SELECT id, claimed_until FROM \(unescaped: schema.quoted).outbox_events WHERE claimed_by = 'doomed'"
            ).decode((Int64, Date).self) {
                doomedRows.append(id)
                claimedUntil = min(claimedUntil ?? until, until)
            }
            let pid = try #require(await doomed.pid)
            try await doomed.kill()
            let stillRunning = await doomed.isRunning
            #expect(!stillRunning, "relay process \(pid) is gone")
            let killedAt = ContinuousClock.now

            let survivor = try OutboxRelay(client: clients[0], schema: schema, sink: sink, options: .init(relayID: "survivor", batchSize: 100, claimTimeout: claimTimeout))
            let beforeDeadline = try await survivor.drain()
            if ContinuousClock.now - killedAt < claimTimeout - .milliseconds(200) {
                #expect(beforeDeadline.published == 200, "only the rows nobody held")
                #expect(try await count(clients[0], schema, "outbox_events", where: "status = 'processing' AND claimed_by = 'doomed'") == 100)
            }
            let recovered = try await eventually("the dead relay's rows to be published", timeout: claimTimeout + .seconds(10), interval: .milliseconds(100)) {
                let pass = try await survivor.relayOnce()
                let pending = try await count(clients[0], schema, "outbox_events", where: "status <> 'published'")
                return pending == 0 ? .done(ContinuousClock.now - killedAt) : .pending("\(pending) rows not published (last pass \(pass))")
            }
            let deadline = try #require(claimedUntil)
            let early = try await queryInt(clients[0], "SELECT count(*)::int8 FROM \(unescaped: schema.quoted).outbox_events WHERE id = ANY(\(doomedRows)) AND published_at < \(deadline)")
            #expect(doomedRows.count == 100 && early == 0, "\(early) of the dead relay's \(doomedRows.count) rows were published before its claim expired (all were after \(recovered))")
            #expect(try await count(clients[0], schema, "published") == 300)
            #expect(try await queryInt(clients[0], PostgresQuery(unsafeSQL: "SELECT count(DISTINCT event_id)::int8 FROM \(schema.quoted).published")) == 300)
            try await doomed.cleanUp()
        }
    }

    @Test("run as a Service, a relay publishes rows as they are committed and returns promptly when cancelled")
    func relayService() async throws {
        try await withSchema(pools: 2) { clients, schema in
            let outbox = Outbox(client: clients[0], schema: schema)
            let sink = try await makeSink(clients[0], schema)
            let passes = Mutex(0)
            let relay = try OutboxRelay(
                client: clients[1], schema: schema, sink: sink,
                options: .init(relayID: "service", batchSize: 50, idleDelay: .milliseconds(20), onPass: { _ in passes.withLock { $0 += 1 } })
            )
            let running = Task { try await relay.run() }
            try await enqueueOrders(outbox, 0..<120)
            try await eventually("the running relay to publish 120 rows", timeout: .seconds(15)) {
                try await count(clients[0], schema, "published") == 120
            }
            try await enqueueOrders(outbox, 120..<130)
            // The sink's table fills before the relay marks the rows and reports the pass, so wait for what the
            // relay itself records: every row marked published, and a progress callback per pass (at least
            // 3 passes of at most 50 for the first 120 rows, 1 for the last 10).
            try await eventually("rows committed later to be published and reported too", timeout: .seconds(15),
                                 missing: { "\(passes.withLock { $0 }) passes reported" }) {
                try await outbox.statusCounts() == ["published": 130] && passes.withLock { $0 } >= 4
            }
            #expect(try await count(clients[0], schema, "published") == 130)
            let stopping = ContinuousClock.now
            running.cancel()
            try await running.value
            #expect(ContinuousClock.now - stopping < .seconds(2), "cancellation ends the relay's loop")
        }
    }

    @Test("a sink failing 3 times then succeeding: published with retry_count 3 and delivered once")
    func retriesThenPublishes() async throws {
        try await withSchema { clients, schema in
            let outbox = Outbox(client: clients[0], schema: schema)
            try await enqueueOrders(outbox, 0..<5)
            let sink = FlakySink(inner: try await makeSink(clients[0], schema), failures: 3)
            let relay = try OutboxRelay(client: clients[0], schema: schema, sink: sink, options: .init(retryBackoff: Self.quickRetries))
            try await eventually("all rows published after three failures", timeout: .seconds(15), interval: .milliseconds(10)) {
                try await relay.relayOnce()
                return try await outbox.statusCounts() == ["published": 5]
            }
            #expect(try await count(clients[0], schema, "outbox_events", where: "retry_count = 3") == 5)
            #expect(try await count(clients[0], schema, "outbox_events", where: "error_message LIKE '%injected failure 3 of 3%'") == 5)
            #expect(try await count(clients[0], schema, "published") == 5)
            #expect((0..<5).allSatisfy { sink.attempts(of: "order-placed-\($0)") == 4 })
        }
    }

    @Test("a sink that always fails: the row is parked as failed after max_retries, visible to operators, and can be requeued")
    func parksAfterMaxRetries() async throws {
        try await withSchema { clients, schema in
            let outbox = Outbox(client: clients[0], schema: schema)
            try await enqueueOrders(outbox, 0..<3, maxRetries: 2)
            let broken = FlakySink(inner: try await makeSink(clients[0], schema), failures: .max)
            let relay = try OutboxRelay(client: clients[0], schema: schema, sink: broken, options: .init(retryBackoff: Self.quickRetries))
            let parked = Mutex(0)
            try await eventually("all rows parked", timeout: .seconds(15), interval: .milliseconds(10)) {
                let pass = try await relay.relayOnce()
                parked.withLock { $0 += pass.parked }
                return try await outbox.parked().count == 3
            }
            #expect(parked.withLock { $0 } == 3)
            #expect((0..<3).allSatisfy { broken.attempts(of: "order-placed-\($0)") == 3 }, "one attempt plus max_retries (2) retries")
            #expect(try await outbox.statusCounts() == ["failed": 3])
            let dead = try await outbox.parked()
            #expect(dead.map(\.eventID).sorted() == ["order-placed-0", "order-placed-1", "order-placed-2"])
            #expect(dead.allSatisfy { $0.retryCount == 3 && $0.maxRetries == 2 && $0.lastError.contains("broker unavailable") })
            try await Task.sleep(for: .milliseconds(50))
            #expect(try await relay.relayOnce().claimed == 0, "parked rows are not retried")
            #expect(try await count(clients[0], schema, "published") == 0)

            // An operator requeues one after fixing the broker; a working relay publishes it.
            #expect(try await outbox.requeue(eventIDs: ["order-placed-1"]) == 1)
            let fixed = try OutboxRelay(client: clients[0], schema: schema, sink: PostgresTableSink(client: clients[0], schema: schema, table: try SQLIdentifier("published")))
            #expect(try await fixed.relayOnce() == RelayPass(claimed: 1, published: 1))
            #expect(try await outbox.statusCounts() == ["failed": 2, "published": 1])
            #expect(try await outbox.requeue() == 2)
            #expect(try await fixed.relayOnce().published == 2)
            #expect(try await outbox.statusCounts() == ["published": 3])
        }
    }

    @Test("consumers read the envelope they share with the producer; another version is refused with both named")
    func envelopeRoundTrip() async throws {
        try await withSchema { clients, schema in
            let outbox = Outbox(client: clients[0], schema: schema)
            try await enqueueOrders(outbox, 7..<8)
            let sink = try await makeSink(clients[0], schema)
            #expect(try await OutboxRelay(client: clients[0], schema: schema, sink: sink).relayOnce().published == 1)
            let rows = try await clients[0].query("SELECT event_data::text FROM \(unescaped: schema.quoted).published").collect()
            let bytes = Array(try #require(rows.first).decode(String.self).utf8)
            let envelope = try EventEnvelope<OrderPlaced>.decode(bytes)
            #expect(envelope.id == "order-placed-7")
            #expect(envelope.payload == OrderPlaced(orderID: "order-7", amountCents: 107))
            #expect(envelope.aggregateID == "order-7")
            #expect(envelope.sequence == 1)
            #expect(envelope.correlationID == "checkout-7")
            let refused = #expect(throws: ProdReadyError.self) { try EventEnvelope<OrderPlacedV2>.decode(bytes) }
            #expect(refused?.message.contains("OrderPlaced v1") == true && refused?.message.contains("OrderPlaced v2") == true, "\(String(describing: refused))")
        }
    }

    @Test("bad input: a payload that is not JSON, an incomplete envelope, an empty source → clear errors, nothing written")
    func badInput() async throws {
        try await withSchema { clients, schema in
            let outbox = Outbox(client: clients[0], schema: schema)
            let valid = #"{"id":"e1","type":"OrderPlaced","version":1,"occurred_at":"2026-11-21T10:00:00.000Z","payload":{}}"#
            let cases: [(String, String, String, String)] = [
                ("not JSON", "{\"id\": \"e1\", ", "oms", "not valid JSON"),
                ("a JSON array", "[1, 2]", "oms", "must be a JSON object"),
                ("no payload", #"{"id":"e1","type":"OrderPlaced","version":1,"occurred_at":"2026-11-21T10:00:00Z"}"#, "oms", "payload"),
                ("no type", #"{"id":"e1","version":1,"occurred_at":"2026-11-21T10:00:00Z","payload":{}}"#, "oms", "type"),
                ("empty id", #"{"id":"","type":"OrderPlaced","version":1,"occurred_at":"2026-11-21T10:00:00Z","payload":{}}"#, "oms", "empty id"),
                ("version 0", #"{"id":"e1","type":"OrderPlaced","version":0,"occurred_at":"2026-11-21T10:00:00Z","payload":{}}"#, "oms", "version 0"),
                ("bad timestamp", #"{"id":"e1","type":"OrderPlaced","version":1,"occurred_at":"yesterday","payload":{}}"#, "oms", "ISO 8601"),
                ("empty source", valid, "", "source must not be empty"),
            ]
            for (name, json, source, expected) in cases {
                let error = #expect(throws: ProdReadyError.self, "\(name)") {
                    try OutboxMessage(envelopeJSON: Array(json.utf8), source: source)
                }
                #expect(error?.code == .invalidArgument, "\(name)")
                #expect(error?.message.contains(expected) == true, "\(name): \(String(describing: error))")
            }
            #expect(throws: ProdReadyError.self) { try OutboxMessage(envelopeJSON: Array(valid.utf8), source: "oms", maxRetries: -1) }
            try await outbox.transaction { try await $0.enqueue(try OutboxMessage(envelopeJSON: Array(valid.utf8), source: "oms")) }
            #expect(try await count(clients[0], schema, "outbox_events") == 1, "the valid envelope is accepted")
            #expect(throws: ProdReadyError.self) {
                try OutboxRelay(client: clients[0], schema: schema, sink: PostgresTableSink(client: clients[0], schema: schema, table: try SQLIdentifier("x")), options: .init(batchSize: 0))
            }
        }
    }
}
