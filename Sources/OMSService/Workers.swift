public import Logging
import OMSContract
import Foundation
import ProdReadyCore
public import ProdReadyKafka
public import ProdReadyReliability
public import ProdReadyService
public import ServiceLifecycle

/// What both workers share: read a topic as a consumer group, handle each message until it is handled (a
/// dependency that is down is retried, a message is never skipped), then store its offset for the consumer's
/// background commit.
public struct OMSWorkerSettings: Sendable {
    public var topics: OMSTopics
    /// The consumer group; deployments sharing a broker use groups of their own.
    public var groupID: String
    /// How long a claim stays exclusive without a heartbeat, and how often the heartbeat renews it.
    public var lease: Duration
    public var heartbeat: Duration
    /// The pause before handling a message again after a dependency failed.
    public var retryInterval: Duration
    /// The readiness condition a worker satisfies once its group gave it partitions.
    public static let joinedCondition = "consumer joined"
    /// The readiness condition the process satisfies once migrations ran and topics exist.
    public static let preparedCondition = "migrations"
    /// The workers' consumer-group session timeout (the embedded profile's is 3 s; `OMS_KAFKA_PROPERTIES` with
    /// `session.timeout.ms` overrides it). After a broker restart, the broker still lists a worker's member from
    /// before the outage, and a rejoin whose group names that member leader waits out its session before the
    /// group forms again: with 3 s, six of eleven Kafka-down runs (held 7 s) took 8–9.5 s to converge, the workers
    /// rejoining 5–7 s after the broker was back; with 1.5 s, four of four took 3.9–5.2 s. Heartbeats go out every
    /// 500 ms from librdkafka's own thread, so a busy handler does not lose the session.
    public static let groupSessionTimeoutMilliseconds = 1500
    /// How often the workers' handled offsets are committed in the background.
    public static let commitInterval: Duration = .milliseconds(500)
    /// Set to make `/health/ready` wait for the group join.
    public var readiness: Readiness?

    public init(topics: OMSTopics, groupID: String, lease: Duration = .seconds(5), heartbeat: Duration = .seconds(1), retryInterval: Duration = .milliseconds(500)) {
        self.topics = topics
        self.groupID = groupID
        self.lease = lease
        self.heartbeat = heartbeat
        self.retryInterval = retryInterval
    }
}

protocol OMSEventHandling: Sendable {
    var logger: Logger { get }
    var settings: OMSWorkerSettings { get }
    var consumer: KafkaConsumer { get }
    /// The topic this worker reads.
    var topic: String { get }
    /// Handles one event; a thrown error means "try again later".
    func handle(_ event: OMSEvent) async throws
    /// Where `handle` times its steps, reported with a backlog once it is worked off.
    var stages: StageTimer { get }
}

/// A backlog being worked off: batches holding events older than `OMSEventHandling.lagging` (after an outage, a
/// rebalance). Summed from its first such batch until the worker is current again, when it is logged.
struct Backlog {
    var firstReceived: Date
    var events = 0
    var batches = 0
    var oldest: TimeInterval = 0
    /// Time spent handling the backlog's batches, and time spent waiting for them in polls.
    var handling: Duration = .zero
    var polling: Duration = .zero
    var largestBatch = 0
    var lastHandled: Date

    init(firstReceived: Date) {
        self.firstReceived = firstReceived
        self.lastHandled = firstReceived
    }
}

extension OMSEventHandling {
    /// How many aggregates of one polled batch are handled at once.
    static var parallelAggregates: Int { 16 }
    /// Events older than this when received mean the worker is working off a backlog (normally they are tens of ms old).
    static var lagging: TimeInterval { 1 }

    /// The worker's `Service.run`: consumes until graceful shutdown, then leaves the group.
    func consumeUntilShutdown() async throws {
        try await cancelWhenGracefulShutdown { try await consume(consumer, topic: topic, joined: settings.readiness) }
        try? await consumer.close()
    }

    func consume(_ consumer: KafkaConsumer, topic: String, joined: Readiness?) async throws {
        // The topics are created with the migrations; a consumer subscribed before its topic exists would not
        // see it until librdkafka's next metadata refresh, minutes later.
        while let joined, joined.waitingFor.contains(OMSWorkerSettings.preparedCondition) {
            try await Task.sleep(for: .milliseconds(50))
        }
        try await consumer.subscribe(topics: [topic])
        // Group changes in the log: after an outage, how long the rejoin took is what convergence waits for.
        let rebalances = Task { [consumer, logger] in
            for await event in consumer.rebalanceEvents {
                switch event {
                case .assigned(let partitions): logger.notice("partitions assigned", metadata: ["count": "\(partitions.count)"])
                case .revoked(let partitions): logger.notice("partitions revoked", metadata: ["count": "\(partitions.count)"])
                case .failed(let reason): logger.warning("consumer group error; rejoining", metadata: ["reason": "\(reason)"])
                }
            }
        }
        defer { rebalances.cancel() }
        var announced = false
        // When the worker is current again it logs how many events the backlog held, the oldest's age, and where the
        // time went (polls, handling, each step of the handler), so a slow convergence's excerpt shows when the
        // worker got its messages and what it spent working them off.
        var backlog: Backlog?
        let clock = ContinuousClock()
        var lastBatchDone = clock.now
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if !announced, let joined, (try? await consumer.assignment().isEmpty) == false {
                joined.satisfy(OMSWorkerSettings.joinedCondition)
                announced = true
            }
            let messages: [KafkaMessage]
            do {
                messages = try await consumer.poll(upTo: 100, timeout: .milliseconds(200))
            } catch {
                logger.warning("poll failed; retrying", metadata: ["error": "\(error)"])
                try await Task.sleep(for: settings.retryInterval)
                continue
            }
            guard !messages.isEmpty else {
                // Nothing more to read: whatever backlog there was is worked off (the load may have stopped).
                if let run = backlog { reportCaughtUp(run); backlog = nil }
                lastBatchDone = clock.now
                continue
            }
            let polled = clock.now - lastBatchDone
            // One aggregate's events in order, different aggregates side by side: the registry keeps each
            // aggregate's versions in order, and a batch's offsets are committed only once all of it was handled.
            var byAggregate: [String: [OMSEvent]] = [:]
            var order: [String] = []
            for message in messages {
                do {
                    let event = try OMSEvent.decode(message.value)
                    if byAggregate[event.aggregateID] == nil { order.append(event.aggregateID) }
                    byAggregate[event.aggregateID, default: []].append(event)
                } catch {
                    logger.error("skipping an undecodable message", metadata: ["topic": "\(message.topic)", "offset": "\(message.offset)", "error": "\(error)"])
                }
            }
            let received = Date()
            let oldest = byAggregate.values.joined().map { received.timeIntervalSince($0.occurredAt) }.max() ?? 0
            let lags = oldest > Self.lagging
            if !lags, let run = backlog {
                reportCaughtUp(run)
                backlog = nil
            }
            if lags, backlog == nil {
                backlog = Backlog(firstReceived: received)
                stages.reset()
            }
            let handlingBegan = clock.now
            let finished = await withTaskGroup(of: Bool.self) { group in
                var running = 0
                var all = true
                for aggregate in order {
                    if running == Self.parallelAggregates, let done = await group.next() {
                        all = all && done
                        running -= 1
                    }
                    let events = byAggregate[aggregate] ?? []
                    group.addTask {
                        for event in events {
                            guard await handleUntilDone(event) else { return false }
                        }
                        return true
                    }
                    running += 1
                }
                for await done in group { all = all && done }
                return all
            }
            // Shut down mid-batch: nothing stored, the batch is delivered again to whoever reads next.
            guard finished else { return }
            lastBatchDone = clock.now
            if lags, var run = backlog {
                run.events += messages.count
                run.batches += 1
                run.oldest = max(run.oldest, oldest)
                run.handling += lastBatchDone - handlingBegan
                run.polling += polled
                run.largestBatch = max(run.largestBatch, messages.count)
                run.lastHandled = Date()
                backlog = run
            }
            // Stored offsets are committed in the background (the consumer's automatic commit interval) and on
            // close: a synchronous commit per batch held the next poll for a broker round trip, which on the
            // embedded broker (offsets written to S3) was most of a hop's latency. A crash redelivers what was
            // handled since the last commit; the registry absorbs it.
            do {
                try await consumer.store(messages)
            } catch {
                // The partitions were revoked meanwhile: their new owner reads the batch again.
                logger.warning("offsets not stored; the batch will be read again", metadata: ["error": "\(error)"])
            }
        }
    }

    private func reportCaughtUp(_ run: Backlog) {
        let metadata: Logger.Metadata = [
            "events": "\(run.events)", "batches": "\(run.batches)", "largest_batch": "\(run.largestBatch)", "oldest_ms": "\(Int(run.oldest * 1000))",
            "first_received": "\(InternetTime.format(run.firstReceived))", "working_ms": "\(Int(run.lastHandled.timeIntervalSince(run.firstReceived) * 1000))",
            "handling_ms": "\(Int(run.handling.milliseconds))", "polling_ms": "\(Int(run.polling.milliseconds))", "stages": "\(stages.summary())",
        ]
        logger.notice("caught up with a backlog", metadata: metadata)
    }

    /// Until handled: a stopped dependency is waited out, never skipped. False when shutdown came first.
    private func handleUntilDone(_ event: OMSEvent) async -> Bool {
        while true {
            do {
                try await handle(event)
                return true
            } catch is CancellationError {
                return false
            } catch {
                logger.warning("handling failed; retrying", metadata: ["event_id": "\(event.eventID)", "error": "\(error)"])
                if Task.isShuttingDownGracefully || Task.isCancelled { return false }
                do { try await Task.sleep(for: settings.retryInterval) } catch { return false }
            }
        }
    }
}

/// `oms-instance-worker`: applies commands to the write model and appends the resulting domain event.
public struct OMSInstanceWorker: Service, OMSEventHandling {
    public static let handlerName = "oms-instance-worker"
    public static let crashPointNames: Set<String> = ["after_claim", "after_apply"]
    let consumer: KafkaConsumer
    let registry: ProcessedEventRegistry
    let writeModel: OMSWriteModel
    let store: OMSEventStore
    let readStore: OMSReadStore
    let settings: OMSWorkerSettings
    let crashPoints: CrashPoints?
    let logger: Logger
    let stages = StageTimer()

    public init(consumer: KafkaConsumer, registry: ProcessedEventRegistry, writeModel: OMSWriteModel, store: OMSEventStore, readStore: OMSReadStore, settings: OMSWorkerSettings, crashPoints: CrashPoints?, logger: Logger) {
        self.consumer = consumer
        self.registry = registry
        self.writeModel = writeModel
        self.store = store
        self.readStore = readStore
        self.settings = settings
        self.crashPoints = crashPoints
        self.logger = logger
    }

    var topic: String { settings.topics.commands }
    public func run() async throws { try await consumeUntilShutdown() }

    func handle(_ command: OMSEvent) async throws {
        guard command.kind == .command, let type = OMSCommandType(rawValue: command.eventType) else { return }
        let handler = Self.handlerName
        let claim = try await stages.time("claim") {
            try await registry.claim(handler: handler, eventID: command.eventID, aggregateID: command.aggregateID, sequence: command.aggregateSequence)
        }
        switch claim {
        case .duplicateDone:
            return
        case .stale:
            await recordStatus(command, .failed, error: "skipped_stale: a newer version of \(command.aggregateID) was applied before this command (version \(command.aggregateSequence))")
            return
        case .inProgress:
            // Another worker's lease is live: it finishes, or its lease lapses and the next try takes over.
            throw ProdReadyError(.timeout, "\(command.eventID) is being handled by another worker", retriable: true)
        case .claimed(let attempt):
            await recordStatus(command, .processing)
            crashPoints?.reach("after_claim")
            do {
                try await registry.withHeartbeat(handler: handler, eventID: command.eventID, every: settings.heartbeat) { [writeModel, store, crashPoints, stages] in
                    let result = try await stages.time("apply") { try await writeModel.apply(command) }
                    crashPoints?.reach("after_apply")
                    let domain = OMSEvent(
                        eventID: UUIDv5.domainEventID(commandID: command.commandID, eventType: type.resultingEvent, aggregateID: command.aggregateID), kind: .domain,
                        eventType: type.resultingEvent, database: command.database, aggregateID: command.aggregateID, aggregateSequence: command.aggregateSequence,
                        commandID: command.commandID, actor: command.actor, tenant: command.tenant, correlationID: command.correlationID, payload: result)
                    // A first attempt cannot have stored the domain event before, so the index lookup (an S3
                    // GET) is only needed on a retry; even a wrong guess is safe: the create-only index write
                    // then finds the first copy and answers its result.
                    _ = try await stages.time("append") { try await store.append(domain, checkedAbsent: attempt == 1) }
                }
            } catch let failure as OMSValidationError {
                // The command cannot apply: that is its final outcome, not a reason to retry.
                try await registry.markDone(handler: handler, eventID: command.eventID)
                await recordStatus(command, .failed, error: failure.message)
                return
            } catch {
                try? await registry.markFailed(handler: handler, eventID: command.eventID, error: "\(error)")
                throw error
            }
            try await stages.time("done") { try await registry.markDone(handler: handler, eventID: command.eventID) }
            await recordStatus(command, .completed)
        }
    }

    /// Command status is a convenience for clients: a Redis outage must not stop the write side. The projection
    /// worker records COMPLETED again when it projects the domain event, so the status catches up.
    func recordStatus(_ command: OMSEvent, _ state: OMSReadStore.CommandState, error: String? = nil) async {
        do {
            try await stages.time("status") { try await readStore.record(command: command.commandID, state, tenant: command.tenant, aggregateID: command.aggregateID, error: error) }
        } catch {
            logger.warning("command status not recorded", metadata: ["command_id": "\(command.commandID)", "status": "\(state.rawValue)", "error": "\(error)"])
        }
    }
}

/// `oms-projection-worker`: writes each domain event's instance into the read model (Redis).
public struct OMSProjectionWorker: Service, OMSEventHandling {
    public static let handlerName = "oms-projection-worker"
    public static let crashPointNames: Set<String> = ["after_claim"]
    let consumer: KafkaConsumer
    let registry: ProcessedEventRegistry
    let readStore: OMSReadStore
    let settings: OMSWorkerSettings
    let crashPoints: CrashPoints?
    let logger: Logger
    let stages = StageTimer()

    public init(consumer: KafkaConsumer, registry: ProcessedEventRegistry, readStore: OMSReadStore, settings: OMSWorkerSettings, crashPoints: CrashPoints?, logger: Logger) {
        self.consumer = consumer
        self.registry = registry
        self.readStore = readStore
        self.settings = settings
        self.crashPoints = crashPoints
        self.logger = logger
    }

    var topic: String { settings.topics.events }
    public func run() async throws { try await consumeUntilShutdown() }

    func handle(_ event: OMSEvent) async throws {
        guard event.kind == .domain else { return }
        let handler = Self.handlerName
        let claim = try await stages.time("claim") {
            try await registry.claim(handler: handler, eventID: event.eventID, aggregateID: event.aggregateID, sequence: event.aggregateSequence)
        }
        switch claim {
        case .duplicateDone, .stale:
            return
        case .inProgress:
            throw ProdReadyError(.timeout, "\(event.eventID) is being projected by another worker", retriable: true)
        case .claimed:
            crashPoints?.reach("after_claim")
            do {
                if let classID = event.payload["class"]?.stringValue, let id = event.payload["instance_id"]?.stringValue {
                    let document = OMSReadStore.Document(data: event.payload["data"] ?? .null, seq: event.aggregateSequence, deleted: event.payload["deleted"]?.boolValue ?? false)
                    try await stages.time("document") { try await readStore.writeDocument(event.database, classID, id, document) }
                }
                try await stages.time("status") { try await readStore.record(command: event.commandID, .completed, tenant: event.tenant, aggregateID: event.aggregateID) }
            } catch {
                try? await registry.markFailed(handler: handler, eventID: event.eventID, error: "\(error)")
                throw error
            }
            try await stages.time("done") { try await registry.markDone(handler: handler, eventID: event.eventID) }
        }
    }
}
