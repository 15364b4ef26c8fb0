import Testing
import PostgresNIO
import ProdReadyCore
import ProdReadyPostgres
import ProdReadyReliability
import TestSupport

/// Exactly-once under load: many workers, duplicate deliveries in random order.
@Suite("OMS fast layer: registry stress", .requires(.postgres))
struct RegistryStressTests {
    /// How each worker calls the registry. The pinned paths run each worker on its pool's event loop with named
    /// prepared statements (`ProcessedEventRegistry(pool:)`), the fast path the benchmark measures.
    enum Path: String, CaseIterable, Sendable {
        case oneEventPerClaim, markDoneWithNextClaim, batches, oneEventPerClaimPinned, markDoneWithNextClaimPinned

        var isPinned: Bool { self == .oneEventPerClaimPinned || self == .markDoneWithNextClaimPinned }
    }

    @Test("8 registries on separate pools, 5,000 events with 30% duplicate deliveries in random order: each done and applied exactly once", arguments: Path.allCases)
    func exactlyOnceUnderDuplicates(path: Path) async throws {
        var random = SeededRandom.fromEnvironment(label: "registry-stress-\(path.rawValue)")
        let events = (0..<5_000).map { "evt-\($0)" }
        var deliveries = events
        for _ in 0..<1_500 { deliveries.append(events[Int.random(in: 0..<events.count, using: &random)]) }
        deliveries.shuffle(using: &random)
        let workerCount = 8
        let slices = (0..<workerCount).map { worker in stride(from: worker, to: deliveries.count, by: workerCount).map { deliveries[$0] } }

        let url = try #require(try await TestInfrastructure.shared.endpoints(for: [.postgres]).postgresURL)
        try await withSchema(pools: workerCount, maximumConnections: 1) { clients, schema in
            try await clients[0].query(PostgresQuery(unsafeSQL: "CREATE TABLE \(schema.quoted).side_effects (event_id text NOT NULL, applied_by text NOT NULL)"))
            let pinned = path.isPinned ? workerCount : 0
            let outcomes = try await withPinnedPostgresClients(url, count: pinned, maximumConnections: 1, searchPath: schema) { pools in
                try await withThrowingTaskGroup(of: [ClaimOutcome].self) { group in
                    for worker in 0..<workerCount {
                        let options = ProcessedEventRegistry.Options(owner: "worker-\(worker)")
                        let registry = path.isPinned
                            ? try ProcessedEventRegistry(pool: pools[worker], schema: schema, options: options)
                            : try ProcessedEventRegistry(client: clients[worker], schema: schema, options: options)
                        let slice = slices[worker]
                        group.addTask(executorPreference: path.isPinned ? pools[worker].executor : nil) {
                            switch path {
                            case .oneEventPerClaim, .oneEventPerClaimPinned: try await Self.processOneByOne(slice, registry: registry, schema: schema)
                            case .markDoneWithNextClaim, .markDoneWithNextClaimPinned: try await Self.processFinishingWithNextClaim(slice, registry: registry, schema: schema)
                            case .batches: try await Self.processInBatches(slice, registry: registry, schema: schema)
                            }
                        }
                    }
                    return try await group.reduce(into: [ClaimOutcome]()) { $0 += $1 }
                }
            }
            let claimed = outcomes.filter(\.isClaimed).count
            #expect(claimed == 5_000, "every event claimed exactly once (outcomes: \(Dictionary(grouping: outcomes, by: \.description).mapValues(\.count)))")
            #expect(outcomes.count - claimed == 1_500, "every duplicate delivery recognised")
            #expect(try await count(clients[0], schema, "processed_events", where: "status = 'done'") == 5_000)
            #expect(try await count(clients[0], schema, "processed_events", where: "status <> 'done'") == 0, "no processing rows left")
            #expect(try await count(clients[0], schema, "side_effects") == 5_000)
            #expect(try await queryInt(clients[0], PostgresQuery(unsafeSQL: "SELECT count(DISTINCT event_id)::int8 FROM \(schema.quoted).side_effects")) == 5_000)
            #expect(try await count(clients[0], schema, "processed_events", where: "attempt_count <> 1") == 0)
        }
    }

    static func processOneByOne(_ deliveries: [String], registry: ProcessedEventRegistry, schema: SQLIdentifier) async throws -> [ClaimOutcome] {
        var outcomes: [ClaimOutcome] = []
        for eventID in deliveries {
            let outcome = try await registry.claim(handler: "stress", eventID: eventID)
            outcomes.append(outcome)
            guard outcome.isClaimed else { continue }
            try await registry.client.query("INSERT INTO \(unescaped: schema.quoted).side_effects VALUES (\(eventID), \(registry.owner))")
            try await registry.markDone(handler: "stress", eventID: eventID)
        }
        return outcomes
    }

    static func processInBatches(_ deliveries: [String], registry: ProcessedEventRegistry, schema: SQLIdentifier) async throws -> [ClaimOutcome] {
        var outcomes: [ClaimOutcome] = []
        var start = 0
        while start < deliveries.count {
            let batch = Array(deliveries[start..<min(start + 100, deliveries.count)])
            start += batch.count
            let results = try await registry.claimBatch(handler: "stress", batch.map { EventDelivery(eventID: $0) })
            outcomes += results
            let claimed = zip(batch, results).filter { $0.1.isClaimed }.map(\.0)
            guard !claimed.isEmpty else { continue }
            try await registry.client.query("""
                INSERT INTO \(unescaped: schema.quoted).side_effects SELECT e, \(registry.owner) FROM unnest(\(claimed)) AS e
                """)
            let marks = try await registry.markDoneBatch(handler: "stress", eventIDs: claimed)
            if let failure = marks.first(where: { $0.error != nil }) { throw failure.error! }
        }
        return outcomes
    }

    /// The consumer loop that finishes each handled event in the round trip that claims the next delivery.
    static func processFinishingWithNextClaim(_ deliveries: [String], registry: ProcessedEventRegistry, schema: SQLIdentifier) async throws -> [ClaimOutcome] {
        var outcomes: [ClaimOutcome] = []
        var handled: String?
        for eventID in deliveries {
            let outcome: ClaimOutcome
            if let finished = handled {
                outcome = try await registry.markDone(handler: "stress", eventID: finished, thenClaim: EventDelivery(eventID: eventID))
                handled = nil
            } else {
                outcome = try await registry.claim(handler: "stress", eventID: eventID)
            }
            outcomes.append(outcome)
            guard outcome.isClaimed else { continue }
            try await registry.client.query("INSERT INTO \(unescaped: schema.quoted).side_effects VALUES (\(eventID), \(registry.owner))")
            handled = eventID
        }
        if let handled { try await registry.markDone(handler: "stress", eventID: handled) }
        return outcomes
    }

    @Test("markDone with the next claim: finishes one event and claims the next in one call; the ordering guard and duplicates hold; a refused finish claims nothing")
    func markDoneThenClaim() async throws {
        try await withSchema { clients, schema in
            let worker = try registry(clients[0], schema, owner: "worker-a")
            #expect(try await worker.claim(handler: "orders", eventID: "a", aggregateID: "order-1", sequence: 1) == .claimed(attempt: 1))
            let next = try await worker.markDone(handler: "orders", eventID: "a", thenClaim: EventDelivery(eventID: "b", aggregateID: "order-1", sequence: 2))
            #expect(next == .claimed(attempt: 1))
            #expect(try await processedRow(clients[0], schema, handler: "orders", eventID: "a")?.status == "done")
            #expect(try await lastSequence(clients[0], schema, handler: "orders", aggregateID: "order-1") == 1)
            // b is finished by the call that meets a stale delivery and then a repeat of a done event.
            #expect(try await worker.markDone(handler: "orders", eventID: "b", thenClaim: EventDelivery(eventID: "late", aggregateID: "order-1", sequence: 2)) == .stale)
            #expect(try await lastSequence(clients[0], schema, handler: "orders", aggregateID: "order-1") == 2)
            #expect(try await worker.markDone(handler: "orders", eventID: "b", thenClaim: EventDelivery(eventID: "a")) == .duplicateDone, "finishing b again is a no-op; a is done")

            #expect(try await worker.claim(handler: "orders", eventID: "c") == .claimed(attempt: 1))
            let intruder = try registry(clients[0], schema, owner: "worker-b")
            let refused = await #expect(throws: ProdReadyError.self) {
                _ = try await intruder.markDone(handler: "orders", eventID: "c", thenClaim: EventDelivery(eventID: "d"))
            }
            #expect(refused?.code == .notOwner, "\(String(describing: refused))")
            #expect(try await processedRow(clients[0], schema, handler: "orders", eventID: "d") == nil, "nothing is claimed after a refused finish")
            let missing = await #expect(throws: ProdReadyError.self) {
                _ = try await worker.markDone(handler: "orders", eventID: "never-claimed", thenClaim: EventDelivery(eventID: "d"))
            }
            #expect(missing?.code == .notFound)
            let bad = await #expect(throws: ProdReadyError.self) {
                _ = try await worker.markDone(handler: "orders", eventID: "c", thenClaim: EventDelivery(eventID: ""))
            }
            #expect(bad?.code == .invalidArgument)
            #expect(try await processedRow(clients[0], schema, handler: "orders", eventID: "c")?.status == "processing", "a refused call changed nothing")
        }
    }

    @Test("batch claims keep the ordering guard and in-batch repeats: a repeat is inProgress, a stale sequence is stale")
    func batchTransitions() async throws {
        try await withSchema { clients, schema in
            let worker = try registry(clients[0], schema, owner: "worker-a")
            let first = try await worker.claimBatch(handler: "orders", [
                EventDelivery(eventID: "b", aggregateID: "order-1", sequence: 2),
                EventDelivery(eventID: "a", aggregateID: "order-1", sequence: 1),
                EventDelivery(eventID: "b", aggregateID: "order-1", sequence: 2),
            ])
            #expect(first == [.claimed(attempt: 1), .claimed(attempt: 1), .inProgress])
            let marks = try await worker.markDoneBatch(handler: "orders", eventIDs: ["a", "b"])
            #expect(marks.allSatisfy { $0.error == nil })
            #expect(try await lastSequence(clients[0], schema, handler: "orders", aggregateID: "order-1") == 2)
            let second = try await worker.claimBatch(handler: "orders", [
                EventDelivery(eventID: "a"),
                EventDelivery(eventID: "late", aggregateID: "order-1", sequence: 2),
                EventDelivery(eventID: "c", aggregateID: "order-1", sequence: 3),
            ])
            #expect(second == [.duplicateDone, .stale, .claimed(attempt: 1)])
            let intruder = try registry(clients[0], schema, owner: "worker-b")
            let refused = try await intruder.markDoneBatch(handler: "orders", eventIDs: ["c", "never"])
            #expect(refused.map { $0.error?.code } == [.notOwner, .notFound])
            #expect(try await processedRow(clients[0], schema, handler: "orders", eventID: "c")?.status == "processing")
        }
    }
}
