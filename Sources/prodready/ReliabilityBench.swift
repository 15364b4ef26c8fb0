import ArgumentParser
import Foundation
import PostgresNIO
import ProdReadyCore
import ProdReadyInfra
import ProdReadyPerformance
import ProdReadyPostgres
import ProdReadyReliability

struct ReliabilityBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reliability",
        abstract: "Measure the processed-event registry and the outbox relay on PostgreSQL against the targets of issue #3.",
        discussion: """
        Without --database-url it boots a private embedded Postgres (fsync on, as the suites use it) and removes \
        it afterwards; with one it works in a fresh schema that is dropped at the end. Measures: \
        claim → markDone round trip on one connection (target p50 <= 1 ms); one event per claim with N workers, \
        each on its own connection (target >= 4,000 events/s), as claim then markDone (with claims committed \
        synchronously, then asynchronously) and as a consumer loop that finishes each event in the round trip claiming the next (markDone(…, thenClaim:)); the batch path (target >= 20,000 events/s); \
        and the outbox relay with R relays publishing to a table sink (target >= 10,000 rows/s). Prints one \
        line per measurement with percentiles and exits 1 if any target is missed.
        """
    )

    @OptionGroup var options: CommonOptions
    @Option(name: .long, help: "PostgreSQL URL (default: a private embedded Postgres).")
    var databaseURL: String?
    @Option(name: .long, help: "Events for the round-trip measurement (one connection).")
    var roundTrips: Int = 5_000
    @Option(name: .long, help: "Events for the one-event-per-claim throughput measurement.")
    var events: Int = 40_000
    @Option(name: .long, help: "Events for the batch-path measurement.")
    var batchEvents: Int = 200_000
    @Option(name: .long, help: "Events per batch claim.")
    var batchSize: Int = 500
    @Option(name: .long, help: "Concurrent workers, one connection each.")
    var workers: Int = 8
    @Option(name: .long, help: "Outbox rows for the relay measurement.")
    var outboxRows: Int = 100_000
    @Option(name: .long, help: "Concurrent relays, one pool each.")
    var relays: Int = 2
    @Option(name: .long, help: "Rows per relay claim.")
    var relayBatch: Int = 1_000
    @Option(name: .long, help: "How workers reach Postgres: 'pinned' (each worker's pool and task on one event loop) or 'pooled' (pools on the shared group, tasks on the global pool).")
    var client: ClientMode = .pinned

    enum ClientMode: String, ExpressibleByArgument, CaseIterable {
        case pinned, pooled
    }

    func validate() throws {
        try validateRanges([
            ("--round-trips", roundTrips, 1...1_000_000), ("--events", events, 1...10_000_000), ("--batch-events", batchEvents, 1...10_000_000),
            ("--batch-size", batchSize, 1...10_000), ("--workers", workers, 1...64), ("--outbox-rows", outboxRows, 1...10_000_000),
            ("--relays", relays, 1...16), ("--relay-batch", relayBatch, 1...10_000),
        ])
    }

    func run() async throws {
        let failed: [String]
        do {
            if let databaseURL {
                failed = try await measure(url: databaseURL)
            } else {
                let home = options.resolvedHome
                let stack = try NativeStack(directory: StackLocations.newOwnedStack(home: home, label: "bench-reliability"), home: home, owned: true)
                progress("booting a private Postgres")
                do {
                    try await stack.ensure([.postgres])
                    let url = try await stack.endpoints.postgresURL.orThrow(ProdReadyError(.configuration, "the private stack has no Postgres URL"))
                    failed = try await measure(url: url)
                } catch {
                    try? await stack.teardown(removeData: true)
                    throw error
                }
                try await stack.teardown(removeData: true)
            }
        } catch {
            throw fail(error)
        }
        if !failed.isEmpty {
            progress("below target:\n" + failed.joined(separator: "\n"))
            throw ExitCode(1)
        }
    }

    private func measure(url: String) async throws -> [String] {
        let schema = try SQLIdentifier("bench_\(getpid())_\(UInt32.random(in: 0...UInt32.max))")
        let validator = PerformanceValidator()
        // Plain pools for set-up, the outbox and the `pooled` workers; pinned ones for the `pinned` workers.
        let pinnedCount = client == .pinned ? workers : 0
        return try await withPostgresClients(url, count: max(workers, relays), maximumConnections: 1) { clients in
            try await withPinnedPostgresClients(url, count: pinnedCount, maximumConnections: 1, searchPath: schema) { pinned in
                try await ReliabilitySchema.runner(schema: schema).run(on: clients[0])
                do {
                    func registries(_ claimCommit: ProcessedEventRegistry.ClaimCommit) throws -> [ProcessedEventRegistry] {
                        try (0..<workers).map { index in
                            let options = ProcessedEventRegistry.Options(owner: "bench-\(index)", claimCommit: claimCommit)
                            return index < pinned.count
                                ? try ProcessedEventRegistry(pool: pinned[index], schema: schema, options: options)
                                : try ProcessedEventRegistry(client: clients[index], schema: schema, options: options)
                        }
                    }
                    try await measureRegistry(
                        registries: try registries(.synchronous), asynchronousClaims: try registries(.asynchronous),
                        executors: pinned.map(\.executor), client: clients[0], schema: schema, validator: validator
                    )
                    try await measureOutbox(clients: Array(clients.prefix(relays)), schema: schema, validator: validator)
                } catch {
                    _ = try? await clients[0].query(PostgresQuery(unsafeSQL: "DROP SCHEMA \(schema.quoted) CASCADE"))
                    throw error
                }
                try await clients[0].query(PostgresQuery(unsafeSQL: "DROP SCHEMA \(schema.quoted) CASCADE"))
                return await validator.summarize()
            }
        }
    }

    private func measureRegistry(
        registries: [ProcessedEventRegistry], asynchronousClaims: [ProcessedEventRegistry], executors: [EventLoopExecutor],
        client: PostgresClient, schema: SQLIdentifier, validator: PerformanceValidator
    ) async throws {
        let single = registries[0]
        for index in 0..<200 {
            _ = try await single.claim(handler: "warm-up", eventID: "w\(index)")
            try await single.markDone(handler: "warm-up", eventID: "w\(index)")
        }
        progress("claim → markDone round trips: \(roundTrips) on one connection")
        try await validator.measure(
            "claim→markDone round trip, 1 connection",
            thresholds: [.latency(percentile: 50, atMost: .milliseconds(1))],
            operations: roundTrips,
            executors: Array(executors.prefix(1))
        ) { index in
            let outcome = try await single.claim(handler: "round-trip", eventID: "r\(index)", aggregateID: "a\(index % 100)", sequence: Int64(index))
            guard outcome.isClaimed else { throw ProdReadyError(.protocolError, "fresh event r\(index) was \(outcome)") }
            try await single.markDone(handler: "round-trip", eventID: "r\(index)")
        }

        let workerCount = registries.count
        // Claims committed synchronously, then without waiting for their flush (ClaimCommit.asynchronous): one WAL
        // flush per event instead of two.
        let modes = [("", "", registries), (", asynchronous claim commits", "-async", asynchronousClaims)]
        for (label, suffix, mode) in modes {
            progress("one event per claim\(label): \(events) events, \(workerCount) workers")
            let handler = "throughput" + suffix
            try await validator.measure(
                "one event per claim, \(workerCount) workers\(label) (events/s)",
                thresholds: [.throughput(atLeast: 4_000)],
                operations: events,
                concurrency: workerCount,
                executors: executors
            ) { index in
                let registry = mode[index % workerCount]
                let outcome = try await registry.claim(handler: handler, eventID: "t\(index)", aggregateID: "a\(index % 1000)", sequence: Int64(index))
                guard outcome.isClaimed else { throw ProdReadyError(.protocolError, "fresh event t\(index) was \(outcome)") }
                try await registry.markDone(handler: handler, eventID: "t\(index)")
            }
        }

        // The same work as a consumer loop that finishes each event in the round trip that claims the next one.
        progress("one event per claim, markDone riding on the next claim: \(events) events, \(workerCount) workers")
        var piggybacked = await validator.newMeasurement(
            "one event per claim, \(workerCount) workers, markDone with the next claim (events/s)", thresholds: [.throughput(atLeast: 4_000)]
        )
        let clock = ContinuousClock()
        let piggybackStart = clock.now
        let latencies = try await withThrowingTaskGroup(of: [Duration].self) { group in
            for worker in 0..<workerCount {
                let registry = registries[worker]
                let mine = Array(stride(from: worker, to: events, by: workerCount))
                group.addTask(executorPreference: worker < executors.count ? executors[worker] : nil) {
                    func delivery(_ index: Int) -> EventDelivery {
                        EventDelivery(eventID: "p\(index)", aggregateID: "a\(index % 1000)", sequence: Int64(index))
                    }
                    guard let first = mine.first else { return [] }
                    var latencies: [Duration] = []
                    latencies.reserveCapacity(mine.count)
                    var start = ContinuousClock.now
                    guard try await registry.claim(handler: "piggyback", eventID: "p\(first)", aggregateID: "a\(first % 1000)", sequence: Int64(first)).isClaimed else {
                        throw ProdReadyError(.protocolError, "fresh event p\(first) was not claimed")
                    }
                    for (previous, next) in zip(mine, mine.dropFirst()) {
                        let outcome = try await registry.markDone(handler: "piggyback", eventID: "p\(previous)", thenClaim: delivery(next))
                        guard outcome.isClaimed else { throw ProdReadyError(.protocolError, "fresh event p\(next) was \(outcome)") }
                        latencies.append(ContinuousClock.now - start)
                        start = ContinuousClock.now
                    }
                    try await registry.markDone(handler: "piggyback", eventID: "p\(mine.last!)")
                    latencies.append(ContinuousClock.now - start)
                    return latencies
                }
            }
            return try await group.reduce(into: [Duration]()) { $0 += $1 }
        }
        piggybacked.elapsed = clock.now - piggybackStart
        for latency in latencies { piggybacked.record(latency: latency) }
        await validator.add(piggybacked)

        progress("batch path: \(batchEvents) events in batches of \(batchSize), \(workerCount) workers")
        let batchCount = (batchEvents + batchSize - 1) / batchSize
        let eventsPerBatch = batchSize
        let total = batchEvents
        let batches = try await validator.measure(
            "batch path, \(workerCount) workers × \(batchSize) per claim (batches)",
            thresholds: [],
            operations: batchCount,
            concurrency: workerCount,
            executors: executors
        ) { batch in
            let registry = registries[batch % workerCount]
            let range = (batch * eventsPerBatch)..<min((batch + 1) * eventsPerBatch, total)
            // Each aggregate's events stay inside one batch, so concurrent batches never make each other stale.
            let deliveries = range.map { EventDelivery(eventID: "b\($0)", aggregateID: "a\(batch)-\($0 % 100)", sequence: Int64($0)) }
            let outcomes = try await registry.claimBatch(handler: "batch", deliveries)
            guard outcomes.allSatisfy(\.isClaimed) else { throw ProdReadyError(.protocolError, "a fresh batch was not fully claimed") }
            let marks = try await registry.markDoneBatch(handler: "batch", eventIDs: deliveries.map(\.eventID))
            if let failure = marks.first(where: { $0.error != nil })?.error { throw failure }
        }
        // The same run expressed in events per second, the unit of the target.
        var perEvent = await validator.newMeasurement("batch path, \(workerCount) workers (events/s)", thresholds: [.throughput(atLeast: 20_000)])
        perEvent.record(operations: total)
        perEvent.elapsed = batches.elapsed
        await validator.add(perEvent)
        let done = try await queryInt(client, PostgresQuery(unsafeSQL: "SELECT count(*)::int8 FROM \(schema.quoted).processed_events WHERE status = 'done' AND handler IN ('throughput', 'piggyback', 'batch')"))
        guard done == 2 * events + total else {
            throw ProdReadyError(.protocolError, "expected \(2 * events + total) done rows after the run, found \(done)")
        }
    }

    private func measureOutbox(clients: [PostgresClient], schema: SQLIdentifier, validator: PerformanceValidator) async throws {
        let outbox = Outbox(client: clients[0], schema: schema)
        progress("outbox: enqueueing \(outboxRows) rows")
        var enqueue = await validator.newMeasurement("outbox enqueue, 1,000 rows per transaction (rows/s)", thresholds: [])
        let clock = ContinuousClock()
        let enqueueStart = clock.now
        for chunk in stride(from: 0, to: outboxRows, by: 1_000) {
            let messages = try (chunk..<min(chunk + 1_000, outboxRows)).map { index in
                try OutboxMessage(
                    EventEnvelope(id: "bench-\(index)", aggregateID: "order-\(index % 1000)", sequence: Int64(index), payload: BenchPayload(orderID: "order-\(index % 1000)", amountCents: index)),
                    source: "bench", subject: "orders"
                )
            }
            try await outbox.transaction { try await $0.enqueue(contentsOf: messages) }
        }
        enqueue.record(operations: outboxRows)
        enqueue.elapsed = clock.now - enqueueStart
        await validator.add(enqueue)

        let table = try SQLIdentifier("bench_sink")
        try await PostgresTableSink(client: clients[0], schema: schema, table: table).prepare()
        let relayList = try clients.enumerated().map { index, client in
            try OutboxRelay(client: client, schema: schema, sink: PostgresTableSink(client: client, schema: schema, table: table),
                            options: .init(relayID: "bench-relay-\(index)", batchSize: relayBatch))
        }
        progress("outbox: \(relayList.count) relays publishing to a table sink")
        var relayMeasurement = await validator.newMeasurement("outbox relay, \(relayList.count) relays → table sink (rows/s)", thresholds: [.throughput(atLeast: 10_000)])
        let relayStart = clock.now
        let passes = try await withThrowingTaskGroup(of: [Duration].self) { group in
            for relay in relayList {
                group.addTask {
                    var latencies: [Duration] = []
                    while true {
                        let start = ContinuousClock.now
                        let pass = try await relay.relayOnce()
                        if pass.claimed == 0 { return latencies }
                        guard pass.published == pass.claimed else { throw ProdReadyError(.protocolError, "relay pass \(pass) did not publish everything") }
                        latencies.append(ContinuousClock.now - start)
                    }
                }
            }
            return try await group.reduce(into: [Duration]()) { $0 += $1 }
        }
        relayMeasurement.elapsed = clock.now - relayStart
        passes.forEach { relayMeasurement.record(latency: $0) }
        relayMeasurement.record(operations: outboxRows - passes.count)
        await validator.add(relayMeasurement)
        let delivered = try await queryInt(clients[0], PostgresQuery(unsafeSQL: "SELECT count(DISTINCT event_id)::int8 FROM \(schema.quoted).bench_sink"))
        let deliveries = try await queryInt(clients[0], PostgresQuery(unsafeSQL: "SELECT count(*)::int8 FROM \(schema.quoted).bench_sink"))
        guard delivered == outboxRows, deliveries == outboxRows else {
            throw ProdReadyError(.protocolError, "the sink holds \(deliveries) deliveries of \(delivered) events; expected \(outboxRows) of each")
        }
        progress("outbox: \(outboxRows) rows delivered exactly once (relay pass latencies are per \(relayBatch)-row batch)")
    }
}

struct BenchPayload: EventPayload {
    static let eventType = "BenchOrderPlaced"
    static let schemaVersion = 1
    var orderID: String
    var amountCents: Int
}

extension Optional {
    func orThrow(_ error: @autoclosure () -> any Error) throws -> Wrapped {
        guard let value = self else { throw error() }
        return value
    }
}
