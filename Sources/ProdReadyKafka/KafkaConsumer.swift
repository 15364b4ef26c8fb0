import ProdReadyCore
import CRdKafka

/// One partition of one topic.
public struct KafkaTopicPartition: Sendable, Hashable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(_ topic: String, _ partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public var description: String { "\(topic)[\(partition)]" }
}

/// Where a consumer reads from in a partition.
public struct KafkaOffset: Sendable, Hashable, CustomStringConvertible {
    let rawValue: Int64

    /// The oldest message still in the partition.
    public static let beginning = KafkaOffset(rawValue: Int64(RD_KAFKA_OFFSET_BEGINNING))
    /// After the newest message: only messages produced from now on.
    public static let end = KafkaOffset(rawValue: Int64(RD_KAFKA_OFFSET_END))
    /// The group's committed offset (falling back to `auto.offset.reset`).
    public static let committed = KafkaOffset(rawValue: Int64(RD_KAFKA_OFFSET_STORED))

    /// A concrete offset; negative values are refused when used.
    public static func at(_ offset: Int64) -> KafkaOffset { KafkaOffset(rawValue: offset) }

    public var description: String {
        switch self {
        case .beginning: "beginning"
        case .end: "end"
        case .committed: "committed"
        default: String(rawValue)
        }
    }
}

/// A change of what a consumer-group member reads, in the order librdkafka reported it.
public enum KafkaRebalanceEvent: Sendable, Equatable {
    /// These partitions were added to this member's assignment.
    case assigned([KafkaTopicPartition])
    /// These partitions were taken away (their stored offsets were committed first).
    case revoked([KafkaTopicPartition])
    /// The group reported an error; librdkafka dropped the assignment and will rejoin.
    case failed(String)
}

/// Reached from librdkafka's rebalance callback through the configuration's opaque pointer.
private final class RebalanceContext: Sendable {
    let continuation: AsyncStream<KafkaRebalanceEvent>.Continuation
    /// Where partitions without a committed offset start: at their end (`startFromEarliest: false`), and the
    /// configuration that reads where the end is.
    let startAtEndWith: KafkaConfiguration?

    init(_ continuation: AsyncStream<KafkaRebalanceEvent>.Continuation, startAtEndWith: KafkaConfiguration?) {
        self.continuation = continuation
        self.startAtEndWith = startAtEndWith
    }

    /// Sets the start of each assigned partition the group has no committed offset for to its high watermark.
    ///
    /// librdkafka would resolve "latest" with ListOffsets, which the embedded broker answers wrongly (see
    /// `KafkaHandle.fetchWatermarks`: 1 after 10 messages), so a member starting at the end re-read old messages.
    /// The high watermark from a fetch response is right on every broker. Runs inside `rd_kafka_consumer_poll`
    /// on the consumer's executor, which it blocks while it asks (up to 10 s per question). If an answer does
    /// not come, the partition keeps librdkafka's own "latest".
    func startUncommittedAtEnd(_ handle: OpaquePointer, _ assigned: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) {
        guard let configuration = startAtEndWith, let committed = rd_kafka_topic_partition_list_copy(assigned) else { return }
        defer { rd_kafka_topic_partition_list_destroy(committed) }
        guard rd_kafka_committed(handle, committed, 10_000) == RD_KAFKA_RESP_ERR_NO_ERROR else { return }
        var uncommitted: [(index: Int, partition: KafkaTopicPartition)] = []
        for index in 0..<Int(committed.pointee.cnt) {
            let element = committed.pointee.elems[index]
            if element.err == RD_KAFKA_RESP_ERR_NO_ERROR, element.offset < 0 {
                uncommitted.append((index, KafkaTopicPartition(String(cString: element.topic), element.partition)))
            }
        }
        guard !uncommitted.isEmpty,
              let reader = try? KafkaHandle.watermarkReader(configuration: configuration),
              let ends = try? KafkaHandle.readWatermarks(uncommitted.map(\.partition), with: reader, timeout: .seconds(10)) else { return }
        for (entry, end) in zip(uncommitted, ends) {
            assigned.pointee.elems[entry.index].offset = end.high
        }
    }
}

/// librdkafka calls this from `rd_kafka_consumer_poll` or `rd_kafka_consumer_close`, so on the consumer's own
/// executor. It must apply the new assignment itself; before giving partitions up it commits the offsets stored
/// for them, so the next owner starts after what this member finished (commit-after-process).
private let rebalanceCallback: @convention(c) (
    OpaquePointer?, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, UnsafeMutableRawPointer?
) -> Void = { handle, code, partitions, opaque in
    guard let handle, let opaque else { return }
    let context = Unmanaged<RebalanceContext>.fromOpaque(opaque).takeUnretainedValue()
    let changed = partitions.map(topicPartitions(in:)) ?? []
    let cooperative = String(cString: rd_kafka_rebalance_protocol(handle)) == "COOPERATIVE"
    switch code {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        if let partitions { context.startUncommittedAtEnd(handle, partitions) }
        if cooperative {
            if let error = rd_kafka_incremental_assign(handle, partitions) { rd_kafka_error_destroy(error) }
        } else {
            _ = rd_kafka_assign(handle, partitions)
        }
        context.continuation.yield(.assigned(changed))
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        // Commits what was stored; "no offset" (nothing stored) is not an error here.
        _ = rd_kafka_commit(handle, nil, 0)
        if cooperative {
            if let error = rd_kafka_incremental_unassign(handle, partitions) { rd_kafka_error_destroy(error) }
        } else {
            _ = rd_kafka_assign(handle, nil)
        }
        context.continuation.yield(.revoked(changed))
    default:
        _ = rd_kafka_assign(handle, nil)
        context.continuation.yield(.failed(kafkaErrorDescription(code)))
    }
}

func topicPartitions(in list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) -> [KafkaTopicPartition] {
    (0..<Int(list.pointee.cnt)).map { index in
        let element = list.pointee.elems[index]
        return KafkaTopicPartition(String(cString: element.topic), element.partition)
    }
}

/// A native partition list for the duration of `body`.
func withPartitionList<Result>(
    _ partitions: [(KafkaTopicPartition, Int64?)],
    _ body: (UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) throws -> Result
) rethrows -> Result {
    let list = rd_kafka_topic_partition_list_new(Int32(max(1, partitions.count)))!
    defer { rd_kafka_topic_partition_list_destroy(list) }
    for (partition, offset) in partitions {
        let element = rd_kafka_topic_partition_list_add(list, partition.topic, partition.partition)
        if let offset { element?.pointee.offset = offset }
    }
    return try body(list)
}

/// The first per-partition error a librdkafka call left in `list`, if any.
private func firstPartitionError(in list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) -> (KafkaTopicPartition, rd_kafka_resp_err_t)? {
    for index in 0..<Int(list.pointee.cnt) {
        let element = list.pointee.elems[index]
        if element.err != RD_KAFKA_RESP_ERR_NO_ERROR {
            return (KafkaTopicPartition(String(cString: element.topic), element.partition), element.err)
        }
    }
    return nil
}

/// Topic names by librdkafka topic handle for one poll: consecutive messages share a topic, so its name is
/// copied out of librdkafka once, not per message.
private struct TopicNames {
    private var last: (handle: OpaquePointer, name: String)?

    mutating func name(of handle: OpaquePointer) -> String {
        if let last, last.handle == handle { return last.name }
        let name = String(cString: rd_kafka_topic_name(handle))
        last = (handle, name)
        return name
    }
}

/// A Kafka consumer: either a consumer-group member (`subscribe`) or a manual reader (`assign`).
///
/// Offsets are never committed behind the caller's back. For at-least-once processing either `commit` each
/// message after handling it, or `store` it after handling and let `commitStored` (or the automatic commit
/// interval) send what was stored; a member losing partitions in a rebalance commits what it stored first.
public final class KafkaConsumer: Sendable {
    private let handle: KafkaHandle
    private let configuration: KafkaConfiguration
    private let rebalanceContext: RebalanceContext
    /// Assignments and revocations as the group reports them (only for `subscribe`).
    public let rebalanceEvents: AsyncStream<KafkaRebalanceEvent>

    /// - Parameters:
    ///   - groupID: the consumer group; required by librdkafka even for manual assignment.
    ///   - startFromEarliest: where a partition without a committed offset starts: its first message, or (false)
    ///     after its last one, as the high watermark is when the partition is assigned.
    ///   - autoCommitInterval: commit stored offsets this often in the background; nil commits only when asked.
    public init(configuration: KafkaConfiguration, groupID: String, startFromEarliest: Bool = true, autoCommitInterval: Duration? = nil) throws {
        guard !groupID.isEmpty else { throw ProdReadyError(.invalidArgument, "Kafka consumer group id must not be empty") }
        if let autoCommitInterval, autoCommitInterval < .milliseconds(1) {
            throw ProdReadyError(.invalidArgument, "the automatic commit interval must be at least 1 ms, got \(autoCommitInterval)")
        }
        let (events, continuation) = AsyncStream<KafkaRebalanceEvent>.makeStream()
        let context = RebalanceContext(continuation, startAtEndWith: startFromEarliest ? nil : configuration)
        handle = try KafkaHandle(
            type: RD_KAFKA_CONSUMER,
            configuration: configuration,
            extra: [
                ("group.id", groupID),
                ("auto.offset.reset", startFromEarliest ? "earliest" : "latest"),
                ("enable.auto.commit", autoCommitInterval == nil ? "false" : "true"),
                ("auto.commit.interval.ms", String(max(1, autoCommitInterval?.wholeMilliseconds ?? 5000))),
                ("enable.auto.offset.store", "false"),
            ],
            callbackContext: context,
            prepare: { conf in
                rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(context).toOpaque())
                rd_kafka_conf_set_rebalance_cb(conf, rebalanceCallback)
            }
        )
        rebalanceEvents = events
        rebalanceContext = context
        self.configuration = configuration
        rd_kafka_poll_set_consumer(handle.pointer)
    }

    deinit {
        // Nothing is reported after the handle is gone; a reader of the events sees their end.
        rebalanceContext.continuation.finish()
    }

    public func subscribe(topics: [String]) async throws {
        guard !topics.isEmpty, topics.allSatisfy({ !$0.isEmpty }) else {
            throw ProdReadyError(.invalidArgument, "subscribe needs at least one non-empty topic name")
        }
        try await handle.executor.run { [handle] in
            let code = withPartitionList(topics.map { (KafkaTopicPartition($0, RD_KAFKA_PARTITION_UA), nil) }) { list in
                rd_kafka_subscribe(handle.pointer, list)
            }
            guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw ProdReadyError(.serverError, "Kafka subscribe failed: \(kafkaErrorDescription(code))")
            }
        }
    }

    /// Reads one partition from `offset` without joining a group.
    public func assign(topic: String, partition: Int32, offset: Int64) async throws {
        try await assign([KafkaTopicPartition(topic, partition): .at(offset)])
    }

    /// Reads exactly these partitions, each from its offset, without joining a group.
    public func assign(_ partitions: [KafkaTopicPartition: KafkaOffset]) async throws {
        guard !partitions.isEmpty, partitions.keys.allSatisfy({ !$0.topic.isEmpty && $0.partition >= 0 }) else {
            throw ProdReadyError(.invalidArgument, "assign needs at least one partition with a non-empty topic and a partition number >= 0")
        }
        try Self.validate(Array(partitions.values))
        let partitions = try await resolvingEnd(try await resolvingUncommitted(partitions))
        try await handle.executor.run { [handle] in
            let code = withPartitionList(partitions.map { ($0.key, $0.value.rawValue) }) { rd_kafka_assign(handle.pointer, $0) }
            guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw ProdReadyError(.serverError, "Kafka assign failed: \(kafkaErrorDescription(code))")
            }
        }
    }

    /// The partitions this consumer reads now.
    public func assignment() async throws -> Set<KafkaTopicPartition> {
        try await handle.executor.run { [handle] in
            var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
            let code = rd_kafka_assignment(handle.pointer, &list)
            guard code == RD_KAFKA_RESP_ERR_NO_ERROR, let list else {
                throw ProdReadyError(.serverError, "Kafka assignment query failed: \(kafkaErrorDescription(code))")
            }
            defer { rd_kafka_topic_partition_list_destroy(list) }
            return Set(topicPartitions(in: list))
        }
    }

    /// Stops fetching from `partitions` (they stay assigned); messages already fetched may still arrive.
    public func pause(_ partitions: [KafkaTopicPartition]) async throws {
        try await changeFetching(partitions, pause: true)
    }

    /// Fetches from `partitions` again, from where they were paused.
    public func resume(_ partitions: [KafkaTopicPartition]) async throws {
        try await changeFetching(partitions, pause: false)
    }

    private func changeFetching(_ partitions: [KafkaTopicPartition], pause: Bool) async throws {
        let verb = pause ? "pause" : "resume"
        guard !partitions.isEmpty else { throw ProdReadyError(.invalidArgument, "\(verb) needs at least one partition") }
        try await handle.executor.run { [handle] in
            try withPartitionList(partitions.map { ($0, nil) }) { list in
                let code = pause ? rd_kafka_pause_partitions(handle.pointer, list) : rd_kafka_resume_partitions(handle.pointer, list)
                guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
                    throw ProdReadyError(.serverError, "Kafka \(verb) failed: \(kafkaErrorDescription(code))")
                }
                if let (partition, error) = firstPartitionError(in: list) {
                    throw ProdReadyError(.invalidArgument, "Kafka \(verb) of \(partition) failed: \(kafkaErrorDescription(error))")
                }
            }
        }
    }

    /// Moves the read position of assigned partitions; the next messages from each come from its new offset.
    public func seek(_ positions: [KafkaTopicPartition: KafkaOffset], timeout: Duration = .seconds(10)) async throws {
        guard !positions.isEmpty else { throw ProdReadyError(.invalidArgument, "seek needs at least one partition") }
        try Self.validate(Array(positions.values))
        guard !positions.values.contains(.committed) else {
            throw ProdReadyError(.invalidArgument, "seek takes a concrete offset, the beginning or the end, not the committed offset")
        }
        let positions = try await resolvingEnd(positions)
        try await handle.executor.run { [handle] in
            try withPartitionList(positions.map { ($0.key, $0.value.rawValue) }) { list in
                if let error = rd_kafka_seek_partitions(handle.pointer, list, Int32(timeout.wholeMilliseconds)) {
                    defer { rd_kafka_error_destroy(error) }
                    throw ProdReadyError(.serverError, "Kafka seek failed: \(String(cString: rd_kafka_error_string(error)))", retriable: rd_kafka_error_is_retriable(error) != 0)
                }
                if let (partition, error) = firstPartitionError(in: list) {
                    let notAssigned = error == RD_KAFKA_RESP_ERR__STATE || error == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION
                    throw ProdReadyError(
                        notAssigned ? .invalidArgument : .serverError,
                        "Kafka seek of \(partition) failed: \(kafkaErrorDescription(error))\(notAssigned ? " (seek works on assigned partitions only)" : "")"
                    )
                }
            }
        }
    }

    /// `.committed` replaced by `.end` where the group has committed nothing, for a consumer that starts
    /// uncommitted partitions at their end (librdkafka's own "latest" would ask ListOffsets; see `resolvingEnd`).
    private func resolvingUncommitted(_ positions: [KafkaTopicPartition: KafkaOffset]) async throws -> [KafkaTopicPartition: KafkaOffset] {
        let fromCommitted = positions.filter { $0.value == .committed }.map(\.key)
        guard rebalanceContext.startAtEndWith != nil, !fromCommitted.isEmpty else { return positions }
        var resolved = positions
        for (partition, offset) in try await committed(fromCommitted) where offset == nil {
            resolved[partition] = .end
        }
        return resolved
    }

    /// `.end` replaced by the partition's high watermark as a fetch reports it: librdkafka would resolve it with
    /// ListOffsets, which the embedded broker answers wrongly (see `KafkaHandle.fetchWatermarks`).
    private func resolvingEnd(_ positions: [KafkaTopicPartition: KafkaOffset]) async throws -> [KafkaTopicPartition: KafkaOffset] {
        let atEnd = positions.filter { $0.value == .end }.map(\.key)
        guard !atEnd.isEmpty else { return positions }
        let watermarks = try await KafkaHandle.fetchWatermarks(atEnd, configuration: configuration, timeout: .seconds(10))
        var resolved = positions
        for (partition, watermarks) in zip(atEnd, watermarks) { resolved[partition] = .at(watermarks.high) }
        return resolved
    }

    private static func validate(_ offsets: [KafkaOffset]) throws {
        if let bad = offsets.first(where: { $0.rawValue < 0 && ![KafkaOffset.beginning, .end, .committed].contains($0) }) {
            throw ProdReadyError(.invalidArgument, "Kafka offsets are >= 0 (or beginning, end, committed), got \(bad.rawValue)")
        }
    }

    /// Waits up to `timeout` for the next message; nil if none arrived. Broker-reported errors other than
    /// "end of partition" are thrown.
    public func poll(timeout: Duration) async throws -> KafkaMessage? {
        try await poll(upTo: 1, timeout: timeout).first
    }

    /// Waits up to `timeout` for the first message, then takes whatever else is already fetched, up to `limit`
    /// messages in all: one trip to the consumer's executor for many messages.
    public func poll(upTo limit: Int, timeout: Duration) async throws -> [KafkaMessage] {
        guard limit > 0 else { throw ProdReadyError(.invalidArgument, "poll limit must be positive, got \(limit)") }
        return try await handle.executor.run { [handle] in
            var messages: [KafkaMessage] = []
            var topicNames = TopicNames()
            var wait = Int32(timeout.wholeMilliseconds)
            while messages.count < limit, let message = rd_kafka_consumer_poll(handle.pointer, wait) {
                defer { rd_kafka_message_destroy(message) }
                wait = 0
                do {
                    if let converted = try Self.convert(message, topicNames: &topicNames) { messages.append(converted) }
                } catch where !messages.isEmpty {
                    // Hand over what was consumed rather than lose it; librdkafka's consumer errors are broker
                    // notices that come back on the next poll while the condition lasts.
                    return messages
                }
            }
            return messages
        }
    }

    /// The messages as they arrive, fetched in batches of up to `batch`. The sequence ends when the task
    /// iterating it is cancelled. Errors librdkafka recovers from by itself (a broker restarting, a partition
    /// leader moving) are skipped; any other error ends the iteration by being thrown.
    public func messages(batch: Int = 500, pollInterval: Duration = .milliseconds(100)) -> KafkaMessageSequence {
        KafkaMessageSequence(consumer: self, batch: max(1, batch), pollInterval: pollInterval)
    }

    /// A consumed message, nil for an end-of-partition notice; a broker-reported error is thrown.
    private static func convert(_ message: UnsafeMutablePointer<rd_kafka_message_t>, topicNames: inout TopicNames) throws -> KafkaMessage? {
        let code = message.pointee.err
        if code == RD_KAFKA_RESP_ERR__PARTITION_EOF { return nil }
        guard code == RD_KAFKA_RESP_ERR_NO_ERROR else { throw consumeError(code) }
        let value = message.pointee.payload.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: message.pointee.len)) } ?? []
        let key = message.pointee.key.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: message.pointee.key_len)) }
        let topic = message.pointee.rkt.map { topicNames.name(of: $0) } ?? ""
        var headers: [KafkaHeader] = []
        var nativeHeaders: OpaquePointer?
        if rd_kafka_message_headers(message, &nativeHeaders) == RD_KAFKA_RESP_ERR_NO_ERROR, let nativeHeaders {
            var index = 0
            var name: UnsafePointer<CChar>?
            var bytes: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(nativeHeaders, index, &name, &bytes, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                headers.append(KafkaHeader(name.map { String(cString: $0) } ?? "", bytes.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: size)) }))
                index += 1
            }
        }
        return KafkaMessage(topic: topic, partition: message.pointee.partition, offset: message.pointee.offset, key: key, value: value, headers: headers)
    }

    /// Consumer errors are notices librdkafka recovers from, except a fatal error and a topic or group the
    /// broker does not know or does not allow: those need the caller.
    private static func consumeError(_ code: rd_kafka_resp_err_t) -> ProdReadyError {
        switch code {
        case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
            ProdReadyError(.notFound, "Kafka consume error: \(kafkaErrorDescription(code))")
        case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
            ProdReadyError(.accessDenied, "Kafka consume error: \(kafkaErrorDescription(code))")
        case RD_KAFKA_RESP_ERR__FATAL:
            ProdReadyError(.serverError, "Kafka consumer hit a fatal error: \(kafkaErrorDescription(code))")
        default:
            ProdReadyError(.serverError, "Kafka consume error: \(kafkaErrorDescription(code))", retriable: true)
        }
    }

    /// Commits the offset after `message` synchronously (at-least-once: call after processing).
    public func commit(_ message: KafkaMessage) async throws {
        try await commit([KafkaTopicPartition(message.topic, message.partition): message.offset + 1])
    }

    /// Commits, per partition, the offset of the next message to read.
    public func commit(_ nextOffsets: [KafkaTopicPartition: Int64]) async throws {
        guard !nextOffsets.isEmpty else { return }
        guard nextOffsets.values.allSatisfy({ $0 >= 0 }) else {
            throw ProdReadyError(.invalidArgument, "committed offsets are >= 0, got \(nextOffsets.values.sorted())")
        }
        try await handle.executor.run { [handle] in
            let code = withPartitionList(nextOffsets.map { ($0.key, $0.value) }) { rd_kafka_commit(handle.pointer, $0, 0) }
            guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw ProdReadyError(.serverError, "Kafka commit failed: \(kafkaErrorDescription(code))", retriable: true)
            }
        }
    }

    /// Records that `messages` were processed; `commitStored`, the automatic commit interval or a rebalance
    /// commits what was stored. Storing is local and cheap, so it can follow every message.
    public func store(_ messages: [KafkaMessage]) async throws {
        let next = Self.nextOffsets(after: messages)
        guard !next.isEmpty else { return }
        try await handle.executor.run { [handle] in
            try withPartitionList(next.map { ($0.key, $0.value) }) { list in
                let code = rd_kafka_offsets_store(handle.pointer, list)
                if let (partition, error) = firstPartitionError(in: list) {
                    throw ProdReadyError(
                        .invalidArgument,
                        "Kafka offset store for \(partition) failed: \(kafkaErrorDescription(error)) (offsets are stored for assigned partitions only)"
                    )
                }
                guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
                    throw ProdReadyError(.serverError, "Kafka offset store failed: \(kafkaErrorDescription(code))")
                }
            }
        }
    }

    /// Commits the stored offsets of every assigned partition synchronously; nothing stored is not an error.
    public func commitStored() async throws {
        try await handle.executor.run { [handle] in
            let code = rd_kafka_commit(handle.pointer, nil, 0)
            guard code == RD_KAFKA_RESP_ERR_NO_ERROR || code == RD_KAFKA_RESP_ERR__NO_OFFSET else {
                throw ProdReadyError(.serverError, "Kafka commit failed: \(kafkaErrorDescription(code))", retriable: true)
            }
        }
    }

    /// The group's committed offsets (the next offset to read) for `partitions`; nil where nothing is committed.
    public func committed(_ partitions: [KafkaTopicPartition], timeout: Duration = .seconds(10)) async throws -> [KafkaTopicPartition: Int64?] {
        try await handle.committedOffsets(partitions, timeout: timeout)
    }

    /// Leaves the group cleanly so the broker rebalances at once instead of after the session timeout; stored
    /// offsets are committed as the partitions are revoked.
    public func close() async throws {
        try await handle.executor.run { [handle] in
            _ = rd_kafka_consumer_close(handle.pointer)
        }
    }
}

extension KafkaHandle {
    /// OffsetFetch for this handle's `group.id`.
    func committedOffsets(_ partitions: [KafkaTopicPartition], timeout: Duration) async throws -> [KafkaTopicPartition: Int64?] {
        guard !partitions.isEmpty else { return [:] }
        return try await executor.run { [self] in
            try withPartitionList(partitions.map { ($0, nil) }) { list in
                let code = rd_kafka_committed(pointer, list, Int32(timeout.wholeMilliseconds))
                guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
                    throw ProdReadyError(.serverError, "Kafka committed-offset query failed: \(kafkaErrorDescription(code))", retriable: true)
                }
                if let (partition, error) = firstPartitionError(in: list) {
                    throw ProdReadyError(.serverError, "Kafka committed offset of \(partition): \(kafkaErrorDescription(error))", retriable: true)
                }
                var result: [KafkaTopicPartition: Int64?] = [:]
                for index in 0..<Int(list.pointee.cnt) {
                    let element = list.pointee.elems[index]
                    result[KafkaTopicPartition(String(cString: element.topic), element.partition)] = element.offset >= 0 ? element.offset : nil
                }
                return result
            }
        }
    }
}

/// A consumer's messages as an `AsyncSequence` (see `KafkaConsumer.messages`).
public struct KafkaMessageSequence: AsyncSequence, Sendable {
    public typealias Element = KafkaMessage
    let consumer: KafkaConsumer
    let batch: Int
    let pollInterval: Duration

    public struct AsyncIterator: AsyncIteratorProtocol {
        let consumer: KafkaConsumer
        let batch: Int
        let pollInterval: Duration
        var buffered: [KafkaMessage] = []
        var nextIndex = 0

        public mutating func next() async throws -> KafkaMessage? {
            while nextIndex == buffered.count {
                if Task.isCancelled { return nil }
                do {
                    buffered = try await consumer.poll(upTo: batch, timeout: pollInterval)
                } catch let error as ProdReadyError where error.isRetriable {
                    buffered = []
                }
                nextIndex = 0
            }
            defer { nextIndex += 1 }
            return buffered[nextIndex]
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(consumer: consumer, batch: batch, pollInterval: pollInterval)
    }
}

extension KafkaConsumer {
    /// Polls until `count` messages arrived or `timeout` passed, committing each when `commit`; returns what
    /// arrived (callers assert on the count, so a shortfall shows exactly what was missing).
    public func collect(_ count: Int, within timeout: Duration, commit: Bool = false) async throws -> [KafkaMessage] {
        var messages: [KafkaMessage] = []
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while messages.count < count, clock.now < deadline {
            let batch = try await poll(upTo: count - messages.count, timeout: .milliseconds(200))
            messages += batch
            if commit, !batch.isEmpty { try await self.commit(Self.nextOffsets(after: batch)) }
        }
        return messages
    }

    /// Per partition, the offset after the last of `messages`.
    static func nextOffsets(after messages: [KafkaMessage]) -> [KafkaTopicPartition: Int64] {
        var next: [KafkaTopicPartition: Int64] = [:]
        for message in messages {
            let partition = KafkaTopicPartition(message.topic, message.partition)
            next[partition] = max(next[partition] ?? 0, message.offset + 1)
        }
        return next
    }
}

extension KafkaMessage {
    /// The value as UTF-8 text.
    public var text: String { String(decoding: value, as: UTF8.self) }
}
