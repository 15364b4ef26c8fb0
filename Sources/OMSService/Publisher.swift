public import Logging
public import OMSContract
public import PostgresNIO
import ProdReadyCore
public import ProdReadyKafka
public import ProdReadyPostgres
public import ProdReadyService
public import ServiceLifecycle

/// Where the OMS's events go on Kafka. A prefix keeps a test's or a tenant's topics apart.
public struct OMSTopics: Sendable, Equatable {
    public var prefix: String
    public init(prefix: String = "") { self.prefix = prefix }
    public var commands: String { prefix + "instance_commands" }
    public var events: String { prefix + "instance_events" }
    public func topic(for kind: OMSEvent.Kind) -> String? {
        switch kind {
        case .command: commands
        case .domain: events
        case .tombstone: nil
        }
    }
}

/// Tails the event store into Kafka (SPEC-oms "Event store on S3"): per database, every sequence in order, none
/// skipped. A sequence reserved but not yet visible is waited for; after `gapTimeout` it is closed with a
/// tombstone so the tail moves on. The checkpoint moves only after Kafka acknowledged everything before it, so
/// a crash republishes (at least once) and consumers deduplicate by event id.
public actor OMSPublisher: Service {
    public struct Settings: Sendable {
        public var topics: OMSTopics
        /// How long a reserved sequence may stay invisible before it is closed.
        public var gapTimeout: Duration
        /// The pause between rounds that found nothing to do.
        public var idleInterval: Duration
        /// The pause after a round that failed (a dependency down), before trying again.
        public var retryInterval: Duration

        public init(topics: OMSTopics, gapTimeout: Duration = .seconds(5), idleInterval: Duration = .milliseconds(20), retryInterval: Duration = .milliseconds(500)) {
            self.topics = topics
            self.gapTimeout = gapTimeout
            self.idleInterval = idleInterval
            self.retryInterval = retryInterval
        }
    }

    /// What one round did, for tests and logs.
    public struct Round: Sendable, Equatable {
        public var published = 0
        public var tombstonesPassed = 0
        public var closed: [String] = []
    }

    let store: OMSEventStore
    let postgres: PostgresClient
    let schema: SQLIdentifier
    let producer: KafkaProducer
    let settings: Settings
    let crashPoints: CrashPoints?
    let logger: Logger
    /// The process's readiness: rounds start once its migrations ran (before, every round fails on missing tables).
    let readiness: Readiness?
    /// Per database: the sequence missing at the head of its tail, since when, and the highest sequence reserved
    /// at that moment (every sequence up to it has been reserved at least that long).
    private var gaps: [String: (sequence: Int64, since: ContinuousClock.Instant, reservedUpTo: Int64)] = [:]
    private let clock = ContinuousClock()

    public static let crashPointNames: Set<String> = ["after_publish"]
    /// A batch's delivery reports taking longer than this is logged (at notice): normally they take milliseconds.
    static let slowSend: Duration = .seconds(1)

    public init(
        store: OMSEventStore, postgres: PostgresClient, schema: SQLIdentifier, producer: KafkaProducer, settings: Settings, crashPoints: CrashPoints? = nil,
        readiness: Readiness? = nil, logger: Logger
    ) {
        self.readiness = readiness
        self.store = store
        self.postgres = postgres
        self.schema = schema
        self.producer = producer
        self.settings = settings
        self.crashPoints = crashPoints
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while let readiness = self.readiness, readiness.waitingFor.contains(OMSWorkerSettings.preparedCondition), !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(50))
            }
            // The first failure of a run of failed rounds and how many there were: when publishing resumes, a notice
            // says so, so a slow convergence after an outage can be timed from the publisher's own log.
            var failing: (since: ContinuousClock.Instant, rounds: Int)?
            while !Task.isCancelled {
                do {
                    let round = try await self.publishRound()
                    if let run = failing {
                        self.logger.notice("publishing again after failed rounds", metadata: [
                            "rounds": "\(run.rounds)", "failing_ms": "\(Int((self.clock.now - run.since).milliseconds))", "published": "\(round.published)",
                        ])
                        failing = nil
                    }
                    if round.published + round.tombstonesPassed == 0 { try await Task.sleep(for: self.settings.idleInterval) }
                } catch is CancellationError {
                    return
                } catch {
                    failing = (failing?.since ?? self.clock.now, (failing?.rounds ?? 0) + 1)
                    self.logger.warning("publish round failed; retrying", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: self.settings.retryInterval)
                }
            }
        }
    }

    /// One pass over every database with reserved sequences.
    public func publishRound() async throws -> Round {
        var round = Round()
        let query: PostgresQuery = """
            SELECT av.aggregate_id, av.last_sequence, coalesce(cp.last_sequence, 0)
            FROM \(unescaped: schema.quoted).aggregate_versions av
            LEFT JOIN \(unescaped: schema.quoted).oms_publisher_checkpoints cp ON cp.database = av.aggregate_id
            WHERE av.handler = \(store.allocator.handler) AND av.last_sequence > coalesce(cp.last_sequence, 0)
            """
        let rows = try await queryRows(postgres, query, deadline: .seconds(10), doing: "reading the event logs' heads", logger: logger)
        for row in rows {
            let (database, head, checkpoint) = try row.decode((String, Int64, Int64).self)
            try await publish(database: database, head: head, checkpoint: checkpoint, into: &round)
        }
        return round
    }

    private func publish(database: String, head: Int64, checkpoint: Int64, into round: inout Round) async throws {
        var expected = checkpoint + 1
        var ready: [String] = []
        for key in try await store.keys(database: database, after: checkpoint) {
            guard let sequence = OMSEventStore.sequence(ofKey: key), sequence >= expected else { continue }
            guard sequence == expected else { break }
            ready.append(key)
            expected += 1
        }
        if !ready.isEmpty {
            var events: [OMSEvent] = []
            // At most 32 reads in flight: a page holds up to 1,000 keys.
            for start in stride(from: 0, to: ready.count, by: 32) {
                let chunk = Array(ready[start..<min(start + 32, ready.count)])
                events += try await withThrowingTaskGroup(of: (Int, OMSEvent).self) { group in
                    for (index, key) in chunk.enumerated() {
                        group.addTask { [store] in (index, try await store.read(key: key)) }
                    }
                    var read = [OMSEvent?](repeating: nil, count: chunk.count)
                    for try await (index, event) in group { read[index] = event }
                    return read.compactMap { $0 }
                }
            }
            let messages = events.compactMap { event -> KafkaOutgoing? in
                guard let topic = settings.topics.topic(for: event.kind) else { return nil }
                return KafkaOutgoing(topic: topic, key: Array(event.aggregateID.utf8), value: event.encoded(), headers: [KafkaHeader("event_id", event.eventID), KafkaHeader("event_type", event.eventType)])
            }
            var unplaced = 0
            let sendBegan = clock.now
            let outcomes = try await producer.send(batch: messages)
            // A send waits inside librdkafka while the broker is away or the producer reconnects; say how long.
            let waited = clock.now - sendBegan
            if waited > Self.slowSend {
                logger.notice("a batch waited for Kafka", metadata: ["database": "\(database)", "count": "\(messages.count)", "waited_ms": "\(Int(waited.milliseconds))"])
            }
            for result in outcomes {
                // Any refusal: no checkpoint, the next round sends the batch again.
                if try result.get().offset < 0 { unplaced += 1 }
            }
            // A delivery acknowledged without an offset is librdkafka taking the broker's DUPLICATE_SEQUENCE_NUMBER
            // for "already stored". Tansu 0.6 answers that for a batch it lost while stopping or crashing
            // (measured: a command published during a Kafka stop never reached the topic). Sending the batch again
            // costs at most a duplicate, which consumers absorb by event id; trusting it cost a lost command.
            if unplaced > 0 {
                logger.warning("deliveries acknowledged without an offset; sending the batch again", metadata: ["database": "\(database)", "count": "\(unplaced)", "batch": "\(messages.count)"])
                throw ProdReadyError(.serverError, "\(unplaced) of \(messages.count) deliveries of \(database) were acknowledged without an offset", retriable: true)
            }
            crashPoints?.reach("after_publish")
            let tombstones = events.count - messages.count
            // Published sequences' slots are no longer contested (their events exist); tombstoned ones keep
            // theirs so a late writer is still refused.
            let upsert: PostgresQuery = """
                WITH released AS (
                    DELETE FROM \(unescaped: schema.quoted).oms_sequence_slots
                    WHERE database = \(database) AND sequence <= \(expected - 1) AND owner <> \(OMSEventStore.closedSlot))
                INSERT INTO \(unescaped: schema.quoted).oms_publisher_checkpoints (database, last_sequence, tombstones)
                VALUES (\(database), \(expected - 1), \(Int64(tombstones)))
                ON CONFLICT (database) DO UPDATE SET last_sequence = greatest(oms_publisher_checkpoints.last_sequence, excluded.last_sequence),
                    tombstones = oms_publisher_checkpoints.tombstones + excluded.tombstones, updated_at = now()
                """
            _ = try await queryRows(postgres, upsert, deadline: .seconds(10), doing: "storing the checkpoint of \(database)", logger: logger)
            round.published += messages.count
            round.tombstonesPassed += tombstones
        }
        // Everything visible is out; a reserved sequence at the head that is not visible is a gap.
        guard expected <= head else {
            gaps[database] = nil
            return
        }
        // Sequences whose writers gave them up (S3 refused their event) are closed now, without the timeout.
        let abandoned = try await store.closedRun(database: database, from: expected, through: head)
        if !abandoned.isEmpty {
            for sequence in abandoned {
                let outcome = try await store.close(database: database, sequence: sequence, reason: "abandoned by its writer: the event store refused the event")
                if case .tombstoned(let key) = outcome { round.closed.append(key) }
            }
            logger.notice("closed abandoned sequences", metadata: ["database": "\(database)", "from": "\(abandoned[0])", "count": "\(abandoned.count)"])
            gaps[database] = nil
            return
        }
        let now = clock.now
        if let gap = gaps[database], gap.sequence == expected {
            guard now - gap.since >= settings.gapTimeout else { return }
            let outcome = try await store.close(database: database, sequence: expected, reason: "reserved \(settings.gapTimeout) ago and never written")
            if case .tombstoned(let key) = outcome {
                logger.notice("closed an abandoned sequence", metadata: ["database": "\(database)", "sequence": "\(expected)", "key": "\(key)"])
                round.closed.append(key)
            }
            // A run of sequences abandoned together (an S3 outage refuses every append after its reservation) has
            // waited as long as the first one: the next is closed at the next round, not after another timeout.
            gaps[database] = expected < gap.reservedUpTo ? (expected + 1, gap.since, gap.reservedUpTo) : nil
        } else {
            gaps[database] = (expected, now, head)
        }
    }

    /// The stored checkpoint of `database` (0 when nothing was published yet).
    public func checkpoint(database: String) async throws -> Int64 {
        let query: PostgresQuery = "SELECT last_sequence FROM \(unescaped: schema.quoted).oms_publisher_checkpoints WHERE database = \(database)"
        let rows = try await queryRows(postgres, query, deadline: .seconds(10), doing: "reading the checkpoint of \(database)", logger: logger)
        return try rows.first?.decode(Int64.self) ?? 0
    }
}
