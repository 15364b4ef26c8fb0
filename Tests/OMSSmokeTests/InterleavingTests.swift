import Testing
import PostgresNIO
import ProdReadyCore
import ProdReadyPostgres
import ProdReadyReliability
import TestSupport

/// Promises of SPEC-reliability whose breach needs one exact interleaving. Each test forces its interleaving —
/// a row lock held in an open transaction, a sink held at a gate — and never sleeps to hope for it.
@Suite("OMS fast layer: forced interleavings", .requires(.postgres))
struct InterleavingTests {
    /// How many backends are waiting for a lock the backend `holder` holds.
    static func waitersBlocked(by holder: Int32, _ client: PostgresClient) async throws -> Int {
        try await queryInt(client, "SELECT count(*)::int8 FROM pg_stat_activity WHERE \(holder) = ANY(pg_blocking_pids(pid))")
    }

    @Test(
        "a reclaimer that read an expired lease before another one took the row over decides on the locked row: inProgress, and the first reclaimer stays owner with attempt_count 2",
        arguments: ClaimPath.allCases
    )
    func leaseTakeoverRacingAHeldRow(path: ClaimPath) async throws {
        try await withSchema(pools: 2) { clients, schema in
            let crashed = try registry(clients[1], schema, owner: "crashed-worker")
            let lateReclaimer = try registry(clients[1], schema, owner: "reclaimer-b", lease: .seconds(60))
            #expect(try await path.claim(crashed, handler: "orders", eventID: "e1") == .claimed(attempt: 1))
            try await clients[0].query("""
                UPDATE \(unescaped: schema.quoted).processed_events
                SET heartbeat_at = now() - interval '1 hour', started_at = now() - interval '1 hour' WHERE event_id = 'e1'
                """)
            let outcome = try await clients[0].withConnection { held -> ClaimOutcome in
                try await held.query("BEGIN", logger: testLogger)
                do {
                    let holder = try await held.query("SELECT pg_backend_pid()", logger: testLogger).collect().first?.decode(Int32.self) ?? 0
                    // The first reclaimer has the row locked and is about to take it over.
                    try await held.query("""
                        SELECT 1 FROM \(unescaped: schema.quoted).processed_events WHERE handler = 'orders' AND event_id = 'e1' FOR UPDATE
                        """, logger: testLogger)
                    // The second reclaimer sees the same expired lease and must queue behind the lock.
                    let claim = Task { try await path.claim(lateReclaimer, handler: "orders", eventID: "e1") }
                    do {
                        try await eventually("reclaimer-b's claim to wait on the row lock held by backend \(holder)", timeout: .seconds(15), interval: .milliseconds(5)) {
                            try await Self.waitersBlocked(by: holder, clients[0]) > 0
                        }
                    } catch {
                        claim.cancel()
                        throw error
                    }
                    try await held.query("""
                        UPDATE \(unescaped: schema.quoted).processed_events
                        SET owner = 'reclaimer-a', attempt_count = attempt_count + 1, last_error = NULL,
                            started_at = clock_timestamp(), heartbeat_at = clock_timestamp()
                        WHERE handler = 'orders' AND event_id = 'e1'
                        """, logger: testLogger)
                    try await held.query("COMMIT", logger: testLogger)
                    return try await claim.value
                } catch {
                    _ = try? await held.query("ROLLBACK", logger: testLogger)
                    throw error
                }
            }
            #expect(outcome == .inProgress, "the second reclaimer also won the expired lease")
            let row = try await processedRow(clients[0], schema, handler: "orders", eventID: "e1")
            #expect(row == ProcessedRow(status: "processing", owner: "reclaimer-a", attemptCount: 2, lastError: nil))
        }
    }

    @Test("a seeded reserve expecting 0 after a higher seed is a conflict with actual 6: the lower seed never rewinds the aggregate")
    func seededReserveAfterAHigherSeed() async throws {
        try await withSchema { clients, schema in
            let allocator = try SequenceAllocator(client: clients[0], schema: schema, aggregateType: "order")
            #expect(try await allocator.reserveNext("order-1", seed: 5) == 6)
            let conflict = await #expect(throws: OptimisticConcurrencyConflict.self) {
                try await allocator.reserveNext("order-1", seed: 0, ifExpected: 0)
            }
            #expect(conflict == OptimisticConcurrencyConflict(aggregateID: "order-1", expected: 0, actual: 6))
            #expect(try await lastSequence(clients[0], schema, handler: "write_side:order", aggregateID: "order-1") == 6)
            // The next writer that read 6 gets 7: no number was handed out twice.
            #expect(try await allocator.reserveNext("order-1", seed: 0, ifExpected: 6) == 7)
        }
    }

    @Test("relay A's publish fails after its claim expired and relay B delivered the row: the row ends published with retry_count 0, delivered once")
    func staleRelayFailureAfterAnotherDelivered() async throws {
        try await withSchema(pools: 2) { clients, schema in
            let outbox = Outbox(client: clients[0], schema: schema)
            try await enqueueOrders(outbox, 0..<1)
            let table = PostgresTableSink(client: clients[1], schema: schema, table: try SQLIdentifier("published"))
            try await table.prepare()
            let aInsidePublish = Gate("relay A is inside its publish")
            let aMayFail = Gate("relay A may fail")
            let bDelivered = Gate("relay B delivered")
            let bMayFinish = Gate("relay B may record its success")
            let failingA = GatedSink(entered: aInsidePublish, release: aMayFail) { records in
                records.map { _ in .failure(ProdReadyError(.connectionFailed, "broker went away under relay A", retriable: true)) }
            }
            let deliveringB = GatedSink(entered: bDelivered, release: bMayFinish) { records in
                try await table.publish(records)
            }
            let relayA = try OutboxRelay(client: clients[0], schema: schema, sink: failingA, options: .init(relayID: "relay-a", claimTimeout: .milliseconds(200)))
            let relayB = try OutboxRelay(client: clients[1], schema: schema, sink: deliveringB, options: .init(relayID: "relay-b", claimTimeout: .seconds(60)))

            let passA = Task { try await relayA.relayOnce() }
            try await aInsidePublish.wait()
            try await eventually("relay A's claim on the row to expire", timeout: .seconds(15), interval: .milliseconds(20)) {
                try await count(clients[0], schema, "outbox_events", where: "claimed_by = 'relay-a' AND claimed_until < now()") == 1
            }
            let passB = Task { try await relayB.relayOnce() }
            try await bDelivered.wait()
            #expect(try await count(clients[0], schema, "outbox_events", where: "status = 'processing' AND claimed_by = 'relay-b'") == 1)
            // A's failure arrives while B holds the claim and has delivered, before B records its success.
            aMayFail.open()
            let a = try await passA.value
            #expect(a.claimed == 1 && a.failed == 1)
            bMayFinish.open()
            let b = try await passB.value
            #expect(b.claimed == 1 && b.published == 1)

            let row = try await clients[0].query("""
                SELECT status, retry_count, error_message FROM \(unescaped: schema.quoted).outbox_events
                """).collect()
            let (status, retries, error) = try #require(row.first).decode((String, Int, String?).self)
            #expect(status == "published", "the delivered row ended \(status) with \(error ?? "no error")")
            #expect(retries == 0)
            #expect(try await count(clients[0], schema, "published") == 1)
        }
    }

    @Test("after last_sequence 11, a new event at sequence 11 is stale on every claim path: single, batch, pinned, pinned batch, and thenClaim on both")
    func equalSequenceIsStaleOnEveryPath() async throws {
        let url = try #require(try await TestInfrastructure.shared.endpoints(for: [.postgres]).postgresURL)
        try await withSchema { clients, schema in
            let plain = try registry(clients[0], schema, owner: "worker-a")
            #expect(try await plain.claim(handler: "orders", eventID: "e11", aggregateID: "order-1", sequence: 11) == .claimed(attempt: 1))
            try await plain.markDone(handler: "orders", eventID: "e11")
            #expect(try await lastSequence(clients[0], schema, handler: "orders", aggregateID: "order-1") == 11)
            func delivery(_ path: String) -> EventDelivery { EventDelivery(eventID: "again-11-\(path)", aggregateID: "order-1", sequence: 11) }

            var outcomes: [String: ClaimOutcome] = [:]
            outcomes["single"] = try await plain.claim(handler: "orders", eventID: "again-11-single", aggregateID: "order-1", sequence: 11)
            outcomes["batch"] = try await plain.claimBatch(handler: "orders", [delivery("batch")]).first
            #expect(try await plain.claim(handler: "orders", eventID: "carrier-plain") == .claimed(attempt: 1))
            outcomes["thenClaim"] = try await plain.markDone(handler: "orders", eventID: "carrier-plain", thenClaim: delivery("thenClaim"))
            try await withPinnedPostgresClients(url, count: 1, maximumConnections: 1, searchPath: schema) { pools in
                let pinned = try ProcessedEventRegistry(pool: pools[0], schema: schema, options: .init(owner: "worker-p"))
                try await withTaskExecutorPreference(pools[0].executor) {
                    outcomes["pinned"] = try await pinned.claim(handler: "orders", eventID: "again-11-pinned", aggregateID: "order-1", sequence: 11)
                    outcomes["pinned batch"] = try await pinned.claimBatch(handler: "orders", [delivery("pinned batch")]).first
                    #expect(try await pinned.claim(handler: "orders", eventID: "carrier-pinned") == .claimed(attempt: 1))
                    outcomes["pinned thenClaim"] = try await pinned.markDone(handler: "orders", eventID: "carrier-pinned", thenClaim: delivery("pinned thenClaim"))
                }
            }
            let paths = ["single", "batch", "thenClaim", "pinned", "pinned batch", "pinned thenClaim"]
            let notStale = paths.filter { outcomes[$0] != .stale }.map { "\($0): \(outcomes[$0].map(\.description) ?? "no answer")" }
            #expect(notStale.isEmpty, "a sequence equal to last_sequence was not stale on: \(notStale)")
            for path in paths {
                #expect(try await processedRow(clients[0], schema, handler: "orders", eventID: "again-11-\(path)")?.status == "skipped_stale", "\(path)")
            }
            // The guard refuses only what is not newer: sequence 12 is claimed.
            #expect(try await plain.claim(handler: "orders", eventID: "e12", aggregateID: "order-1", sequence: 12) == .claimed(attempt: 1))
            #expect(try await lastSequence(clients[0], schema, handler: "orders", aggregateID: "order-1") == 11)
        }
    }
}

/// A sink that opens `entered` once it has done its work, then holds until `release` opens, then answers.
struct GatedSink: OutboxSink {
    let entered: Gate
    let release: Gate
    let work: @Sendable ([OutboxRecord]) async throws -> [Result<Void, ProdReadyError>]

    init(entered: Gate, release: Gate, work: @escaping @Sendable ([OutboxRecord]) async throws -> [Result<Void, ProdReadyError>]) {
        self.entered = entered
        self.release = release
        self.work = work
    }

    func publish(_ records: [OutboxRecord]) async throws -> [Result<Void, ProdReadyError>] {
        let results = try await work(records)
        entered.open()
        try await release.wait()
        return results
    }
}
