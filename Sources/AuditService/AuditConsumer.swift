public import AuditContract
public import Foundation
public import Logging
import Metrics
import Synchronization
public import Prometheus
import ProdReadyCore
public import ProdReadyNATS
public import ProdReadyService
public import ServiceLifecycle

/// Counters and histograms `/metrics` shows for the consumer.
public struct AuditConsumerMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    static let latencyBuckets: [Duration] = [
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]

    public init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    func stored(_ count: Int) { registry.makeCounter(name: "audit_events_stored_total").increment(by: Int64(count)) }
    func duplicates(_ count: Int) { registry.makeCounter(name: "audit_duplicates_absorbed_total").increment(by: Int64(count)) }
    func deadLetters(_ count: Int) { registry.makeCounter(name: "audit_dead_letters_total").increment(by: Int64(count)) }
    func lag(_ pending: UInt64) { registry.makeGauge(name: "audit_consumer_lag").set(Double(pending)) }
    func storeFailure() { registry.makeCounter(name: "audit_store_failures_total").increment() }
    /// From the event's time at its producer to its row being committed here.
    func endToEnd(_ latency: Duration) {
        registry.makeDurationHistogram(name: "audit_end_to_end_latency_seconds", buckets: Self.latencyBuckets).record(latency)
    }
}

/// The longest time a fetched batch went without the server hearing from the consumer (fetch to ack, or between
/// two in-progress signals while Postgres is down). It must stay under the consumer's ack wait, or the server
/// redelivers a batch still being stored; `/api/v1/system/config` reports it so a configuration check can compare.
public final class BatchSilenceMeter: Sendable {
    private let longestNanoseconds = Mutex<Int64>(0)
    public init() {}
    public var longest: Duration { .nanoseconds(longestNanoseconds.withLock { $0 }) }
    func observe(_ silence: Duration) {
        let nanoseconds = silence.components.seconds * 1_000_000_000 + silence.components.attoseconds / 1_000_000_000
        longestNanoseconds.withLock { $0 = max($0, nanoseconds) }
    }
}

/// The `audit` process's consumer: a durable pull consumer on the audit subjects. Each fetched batch is stored in
/// one transaction (events once by event id, each with its tracking row; poison messages as dead letters) and
/// acknowledged only after that committed, with a flush that waits until the server has the acks. A batch that
/// cannot be stored (Postgres down) is kept and retried, never acknowledged, so nothing is lost; a redelivered event
/// finds its row and is only acknowledged again.
public struct AuditConsumer: Service {
    public struct Settings: Sendable {
        public var subjects: AuditSubjects
        public var durable: String
        public var ackWait: Duration
        public var maxDeliver: Int?
        public var batchSize: Int
        /// Batches fetched and stored at once.
        public var parallelBatches: Int
        /// The consumer name in `event_consumer_tracking`.
        public var consumerName: String { durable }

        public init(subjects: AuditSubjects, durable: String, ackWait: Duration, maxDeliver: Int?, batchSize: Int = 200, parallelBatches: Int = 3) {
            self.parallelBatches = parallelBatches
            self.subjects = subjects
            self.durable = durable
            self.ackWait = ackWait
            self.maxDeliver = maxDeliver
            self.batchSize = batchSize
        }
    }

    public static let joinedCondition = "consumer joined"
    let nats: NATSConnection
    let store: AuditStore
    let settings: Settings
    let metrics: AuditConsumerMetrics
    let readiness: Readiness
    let crashPoints: CrashPoints?
    let logger: Logger
    public let silence = BatchSilenceMeter()
    private let clock = ContinuousClock()

    public init(nats: NATSConnection, store: AuditStore, settings: Settings, metrics: AuditConsumerMetrics, readiness: Readiness, crashPoints: CrashPoints?, logger: Logger) {
        self.nats = nats
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.readiness = readiness
        self.crashPoints = crashPoints
        self.logger = logger
    }

    public static let crashPointNames: Set<String> = ["after_store", "before_store"]

    public func run() async throws {
        try await cancelWhenGracefulShutdown { try await consume() }
    }

    func consume() async throws {
        while readiness.waitingFor.contains("migrations") { try await Task.sleep(for: .milliseconds(50)) }
        let subscription = try await subscribe()
        readiness.satisfy(Self.joinedCondition)
        // Several batches in flight: one is decoded here while Postgres stores another. Order does not matter (each
        // event is stored once by its id, pages sort by event time); one loop alone left both half idle.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<settings.parallelBatches { group.addTask { try await consumeBatches(subscription) } }
            try await group.waitForAll()
        }
    }

    func consumeBatches(_ subscription: JetStreamPullSubscription) async throws {
        var failures = 0
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let messages: [JetStreamMessage]
            do {
                messages = try await subscription.fetch(batch: settings.batchSize, timeout: .milliseconds(500))
                failures = 0
            } catch {
                failures += 1
                logger.warning("fetch failed; retrying", metadata: ["error": "\(error)"])
                try await Task.sleep(for: .milliseconds(min(5_000, 100 * (1 << min(failures, 6)))))
                continue
            }
            guard !messages.isEmpty else {
                metrics.lag(0)
                continue
            }
            metrics.lag(messages.last?.metadata?.pending ?? 0)
            var lastContact = clock.now
            let fetchedAt = Date()
            let batch = messages.map { message in
                ReceivedAuditMessage.decode(message.payload, subject: message.subject, stream: settings.subjects.streamName, streamSequence: message.metadata?.streamSequence ?? 0)
            }
            crashPoints?.reach("before_store")
            guard let outcome = try await storeUntilDone(batch, messages, fetchedAt: fetchedAt, lastContact: &lastContact) else { return }
            crashPoints?.reach("after_store")
            metrics.stored(outcome.stored.count)
            metrics.duplicates(outcome.duplicates)
            metrics.deadLetters(outcome.deadLettered)
            let now = Date()
            let stored = Set(outcome.stored)
            for message in batch {
                if case .event(let envelope) = message.content, stored.contains(envelope.id) {
                    metrics.endToEnd(.milliseconds(Int64(max(0, now.timeIntervalSince(envelope.occurredAt)) * 1000)))
                }
            }
            if outcome.deadLettered > 0 { logger.warning("dead-lettered undecodable or invalid audit events", metadata: ["count": "\(outcome.deadLettered)"]) }
            do {
                try await nats.acknowledge(messages)
                silence.observe(clock.now - lastContact)
            } catch {
                // Stored already: the redelivery finds the rows and is acknowledged then.
                logger.warning("acks not confirmed; the batch will be redelivered and absorbed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Stores each message of `batch` in a transaction of its own, dead-lettering those Postgres refuses; nil when
    /// a dependency failed meanwhile (the caller retries the whole batch).
    func storeOneByOne(_ batch: [ReceivedAuditMessage], fetchedAt: Date) async throws -> AuditBatchOutcome? {
        var total = AuditBatchOutcome()
        for message in batch {
            var outcome: AuditBatchOutcome
            do {
                outcome = try await store.store([message], consumer: settings.consumerName, fetchedAt: fetchedAt)
            } catch let error as ProdReadyError where error.code == .invalidArgument {
                var refused = message
                refused.content = .poison(reason: "refused by the audit store: \(error.message)", eventID: { if case .event(let envelope) = message.content { envelope.id } else { nil } }())
                do { outcome = try await store.store([refused], consumer: settings.consumerName, fetchedAt: fetchedAt) } catch { return nil }
            } catch {
                return nil
            }
            total.stored += outcome.stored
            total.duplicates += outcome.duplicates
            total.deadLettered += outcome.deadLettered
        }
        return total
    }

    /// Binds the durable consumer, retrying while NATS or the stream is not there yet.
    func subscribe() async throws -> JetStreamPullSubscription {
        var attempt = 0
        while true {
            do {
                return try await nats.pullSubscribe(
                    subject: settings.subjects.wildcard,
                    consumer: JetStreamConsumerConfiguration(durable: settings.durable, ackWait: settings.ackWait, maxDeliver: settings.maxDeliver, maxAckPending: settings.batchSize * settings.parallelBatches * 4))
            } catch {
                attempt += 1
                logger.warning("cannot bind the audit consumer yet; retrying", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
                try await Task.sleep(for: .milliseconds(min(2_000, 100 * attempt)))
            }
        }
    }

    /// Stores the batch, retrying while Postgres is unavailable and telling the server the batch is still being
    /// worked on; nil when shutdown came first (nothing acknowledged: the batch is redelivered).
    func storeUntilDone(_ batch: [ReceivedAuditMessage], _ messages: [JetStreamMessage], fetchedAt: Date, lastContact: inout ContinuousClock.Instant) async throws -> AuditBatchOutcome? {
        var attempt = 0
        while true {
            do {
                return try await store.store(batch, consumer: settings.consumerName, fetchedAt: fetchedAt)
            } catch is CancellationError {
                return nil
            } catch let error as ProdReadyError where error.code == .invalidArgument {
                // Postgres refused a value (a number out of range, a malformed time): retrying the batch would stall
                // the consumer for good. Each message is stored alone; the one Postgres refuses becomes a dead letter.
                logger.warning("the store refused a value in the batch; storing its events one by one", metadata: ["events": "\(batch.count)", "error": "\(error)"])
                guard let outcome = try await storeOneByOne(batch, fetchedAt: fetchedAt) else { continue }
                return outcome
            } catch {
                attempt += 1
                metrics.storeFailure()
                logger.warning("cannot store the batch; holding it unacknowledged and retrying", metadata: ["events": "\(batch.count)", "attempt": "\(attempt)", "error": "\(error)"])
                if Task.isShuttingDownGracefully || Task.isCancelled { return nil }
                silence.observe(clock.now - lastContact)
                for message in messages { try? await message.inProgress() }
                lastContact = clock.now
                do { try await Task.sleep(for: .milliseconds(min(2_000, 200 * attempt))) } catch { return nil }
            }
        }
    }
}
