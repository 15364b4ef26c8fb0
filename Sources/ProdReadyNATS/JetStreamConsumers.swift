import ProdReadyCore
import CNats
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Settings of a durable pull consumer.
public struct JetStreamConsumerConfiguration: Sendable, Equatable {
    /// The consumer's durable name: it survives restarts and reconnects, and binds again by this name.
    public var durable: String
    /// How long a delivered message may go unacknowledged before it is delivered again.
    public var ackWait: Duration = .seconds(30)
    /// Deliveries after which a message is given up on (nil: no limit). The server then publishes a
    /// `MAX_DELIVERIES` advisory (see `JetStreamAdvisory.maxDeliveries`).
    public var maxDeliver: Int?
    /// Unacknowledged messages the server hands out at most.
    public var maxAckPending: Int?

    public init(durable: String, ackWait: Duration = .seconds(30), maxDeliver: Int? = nil, maxAckPending: Int? = nil) {
        self.durable = durable
        self.ackWait = ackWait
        self.maxDeliver = maxDeliver
        self.maxAckPending = maxAckPending
    }

    func validated() throws -> JetStreamConsumerConfiguration {
        guard !durable.isEmpty, !durable.contains(where: { $0 == "." || $0 == "*" || $0 == ">" || $0.isWhitespace }) else {
            throw ProdReadyError(.invalidArgument, "a durable consumer name must be non-empty without '.', '*', '>' or spaces, got '\(durable)'")
        }
        guard ackWait >= .milliseconds(1) else { throw ProdReadyError(.invalidArgument, "ack wait must be at least 1 ms, got \(ackWait)") }
        if let maxDeliver, maxDeliver < 1 { throw ProdReadyError(.invalidArgument, "max deliver must be at least 1, got \(maxDeliver)") }
        if let maxAckPending, maxAckPending < 1 { throw ProdReadyError(.invalidArgument, "max ack pending must be at least 1, got \(maxAckPending)") }
        return self
    }
}

/// A consumer's state as the server reports it.
public struct JetStreamConsumerInfo: Sendable, Equatable {
    public var stream: String
    public var name: String
    /// Messages in the stream not yet delivered to this consumer.
    public var pending: UInt64
    /// Delivered and not yet acknowledged.
    public var ackPending: Int
    /// Messages delivered more than once (and not yet acknowledged).
    public var redelivered: Int
    /// The highest stream sequence acknowledged with everything before it.
    public var ackFloorStreamSequence: UInt64
    /// The consumer's live settings, as the server holds them (a restarted service may have changed its own).
    public var ackWait: Duration = .zero
    /// nil: no limit.
    public var maxDeliver: Int? = nil
}

/// Where a delivered message sits in its stream and how often it was delivered.
public struct JetStreamMessageMetadata: Sendable, Equatable {
    public var streamSequence: UInt64
    public var consumerSequence: UInt64
    /// 1 on the first delivery.
    public var deliveries: UInt64
    /// Messages still waiting behind this one for the consumer.
    public var pending: UInt64
}

/// Subjects the JetStream server publishes advisories on.
public enum JetStreamAdvisory {
    /// Published when a message reached the consumer's max deliver and will not be delivered again.
    public static func maxDeliveries(stream: String, consumer: String) -> String {
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.\(stream).\(consumer)"
    }
}

extension NATSConnection {
    /// Creates (or binds to) a durable pull consumer on `subject`; an existing durable is updated to
    /// `consumer`'s settings where the server allows it.
    public func pullSubscribe(subject: String, consumer: JetStreamConsumerConfiguration) async throws -> JetStreamPullSubscription {
        try NATSSubject.validate(subject, wildcardsAllowed: true)
        let consumer = try consumer.validated()
        let subscription: SendableHandle = try await executor.run { [self] in
            let jetStream = handles.jetStream
            return try withCStrings([consumer.durable, subject]) { strings in
                var options = jsSubOptions()
                jsSubOptions_Init(&options)
                options.Config.Durable = strings[0]
                options.Config.AckPolicy = js_AckExplicit
                options.Config.AckWait = consumer.ackWait.wholeNanoseconds
                options.Config.MaxDeliver = Int64(consumer.maxDeliver ?? -1)
                if let maxAckPending = consumer.maxAckPending { options.Config.MaxAckPending = Int64(maxAckPending) }
                var subscription: OpaquePointer?
                var errorCode = jsErrCode(0)
                let status = js_PullSubscribe(&subscription, jetStream, strings[1], strings[0], nil, &options, &errorCode)
                guard status == NATS_OK, let subscription else {
                    throw ProdReadyError(.serverError, "pull subscribe to '\(subject)' as '\(consumer.durable)' failed: \(lastErrorText(status)) (JetStream error \(errorCode.rawValue))",
                                         retriable: isRetriable(status))
                }
                return SendableHandle(subscription)
            }
        }
        return JetStreamPullSubscription(subscription: subscription.pointer, connection: self, name: consumer.durable)
    }

    /// The server's view of a consumer: pending, unacknowledged, redelivered.
    public func consumerInfo(stream: String, consumer: String) async throws -> JetStreamConsumerInfo {
        guard !stream.isEmpty, !consumer.isEmpty else { throw ProdReadyError(.invalidArgument, "consumer info needs a stream and a consumer name") }
        return try await executor.run { [self] in
            var info: UnsafeMutablePointer<jsConsumerInfo>?
            var errorCode = jsErrCode(0)
            let status = js_GetConsumerInfo(&info, handles.jetStream, stream, consumer, nil, &errorCode)
            guard status == NATS_OK, let info else {
                if errorCode == JSConsumerNotFoundErr || errorCode == JSStreamNotFoundErr {
                    throw ProdReadyError(.notFound, "no consumer '\(consumer)' on stream '\(stream)'")
                }
                throw ProdReadyError(.serverError, "consumer info for '\(stream)/\(consumer)' failed: \(lastErrorText(status))", retriable: isRetriable(status))
            }
            defer { jsConsumerInfo_Destroy(info) }
            let value = info.pointee
            var result = JetStreamConsumerInfo(
                stream: String(cString: value.Stream), name: String(cString: value.Name), pending: value.NumPending,
                ackPending: Int(value.NumAckPending), redelivered: Int(value.NumRedelivered), ackFloorStreamSequence: value.AckFloor.Stream
            )
            if let config = value.Config?.pointee {
                result.ackWait = .nanoseconds(config.AckWait)
                // The server reports "no limit" as -1 (or 0 from older servers).
                result.maxDeliver = config.MaxDeliver > 0 ? Int(config.MaxDeliver) : nil
            }
            return result
        }
    }
}

/// A consumed JetStream message: settle it with `ack`, `nak`, `term` or keep it with `inProgress`.
public final class JetStreamMessage: @unchecked Sendable {
    // @unchecked Sendable: libnats messages are safe to use from any thread; only executors touch `message`.
    private let message: OpaquePointer
    private let connection: NATSConnection
    public let subject: String
    public let payload: [UInt8]
    /// The `Nats-Msg-Id` it was published with, if any.
    public let messageID: String?
    public let metadata: JetStreamMessageMetadata?

    init(message: OpaquePointer, connection: NATSConnection) {
        self.message = message
        self.connection = connection
        subject = natsMsg_GetSubject(message).map { String(cString: $0) } ?? ""
        let length = Int(natsMsg_GetDataLength(message))
        payload = natsMsg_GetData(message).map { [UInt8](UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
        var id: UnsafePointer<CChar>?
        messageID = natsMsgHeader_Get(message, "Nats-Msg-Id", &id) == NATS_OK ? id.map { String(cString: $0) } : nil
        var meta: UnsafeMutablePointer<jsMsgMetaData>?
        if natsMsg_GetMetaData(&meta, message) == NATS_OK, let meta {
            metadata = JetStreamMessageMetadata(
                streamSequence: meta.pointee.Sequence.Stream, consumerSequence: meta.pointee.Sequence.Consumer,
                deliveries: meta.pointee.NumDelivered, pending: meta.pointee.NumPending
            )
            jsMsgMetaData_Destroy(meta)
        } else {
            metadata = nil
        }
    }

    /// Acknowledges and waits for the server to confirm (so a crash right after cannot redeliver it).
    public func ack() async throws {
        try await settle("ack") { message in
            var errorCode = jsErrCode(0)
            return natsMsg_AckSync(message, nil, &errorCode)
        }
    }

    /// Asks for redelivery, after `delay` if given (otherwise at once).
    public func nak(delay: Duration? = nil) async throws {
        if let delay, delay < .zero { throw ProdReadyError(.invalidArgument, "a nak delay must not be negative, got \(delay)") }
        try await settle("nak") { message in
            if let delay { natsMsg_NakWithDelay(message, delay.wholeMilliseconds, nil) } else { natsMsg_Nak(message, nil) }
        }
    }

    /// Gives up on the message: never delivered again.
    public func term() async throws {
        try await settle("term") { natsMsg_Term($0, nil) }
    }

    /// Resets the ack-wait timer: still working on it.
    public func inProgress() async throws {
        try await settle("in-progress") { natsMsg_InProgress($0, nil) }
    }

    var handle: SendableHandle { SendableHandle(message) }

    private func settle(_ what: String, _ call: @escaping @Sendable (OpaquePointer) -> natsStatus) async throws {
        let handle = SendableHandle(message)
        try await connection.executor.run {
            let status = call(handle.pointer)
            guard status == NATS_OK else {
                throw ProdReadyError(status == NATS_ILLEGAL_STATE ? .invalidArgument : .serverError,
                                     "JetStream \(what) failed: \(lastErrorText(status))", retriable: isRetriable(status))
            }
        }
    }

    deinit {
        let message = SendableHandle(message)
        connection.executor.submit { natsMsg_Destroy(message.pointer) }
    }
}

extension NATSConnection {
    /// Acknowledges a batch with one round trip: every ack is sent without waiting, then a PING/PONG confirms
    /// the server has read them all (it handles a connection's messages in order). For consumers that process
    /// a fetched batch and settle it at once; `JetStreamMessage.ack()` waits for each message's own answer.
    public func acknowledge(_ messages: [JetStreamMessage], timeout: Duration = .seconds(5)) async throws {
        guard !messages.isEmpty else { return }
        let handles = messages.map(\.handle)
        try await executor.run { [self] in
            for handle in handles {
                let status = natsMsg_Ack(handle.pointer, nil)
                guard status == NATS_OK else {
                    throw ProdReadyError(status == NATS_ILLEGAL_STATE ? .invalidArgument : .serverError,
                                         "JetStream ack failed: \(lastErrorText(status))", retriable: isRetriable(status))
                }
            }
            let flushed = natsConnection_FlushTimeout(self.handles.connection, max(1, timeout.wholeMilliseconds))
            guard flushed == NATS_OK else {
                throw ProdReadyError(.connectionFailed, "the server did not confirm \(handles.count) acks: \(lastErrorText(flushed))", retriable: true)
            }
        }
    }
}

/// A durable pull consumer. Fetches block on the subscription's own executor, so acknowledging other messages
/// on the connection is never held up by a fetch that is waiting.
public final class JetStreamPullSubscription: @unchecked Sendable {
    // @unchecked Sendable: libnats subscriptions are thread-safe; `subscription` is used on `executor` only.
    private let subscription: OpaquePointer
    private let connection: NATSConnection
    private let executor: BlockingExecutor
    public let name: String

    init(subscription: OpaquePointer, connection: NATSConnection, name: String) {
        self.subscription = subscription
        self.connection = connection
        self.name = name
        executor = BlockingExecutor(label: "nats.fetch.\(name)")
    }

    /// Fetches up to `batch` messages, waiting at most `timeout`; an empty array when none arrived.
    public func fetch(batch: Int, timeout: Duration) async throws -> [JetStreamMessage] {
        guard batch > 0 else { throw ProdReadyError(.invalidArgument, "fetch batch must be positive, got \(batch)") }
        guard timeout >= .milliseconds(1) else { throw ProdReadyError(.invalidArgument, "fetch timeout must be at least 1 ms, got \(timeout)") }
        let connection = self.connection
        let pointers: [SendableHandle] = try await executor.run { [self] in
            var list = natsMsgList()
            var errorCode = jsErrCode(0)
            let clock = ContinuousClock()
            let deadline = clock.now + timeout
            var status: natsStatus
            repeat {
                // A fetch can end early on the expiry notice of an earlier, shorter fetch that arrived late; wait
                // out the rest of this one's time instead of reporting "nothing there".
                let remaining = max(1, (deadline - clock.now).wholeMilliseconds)
                status = natsSubscription_Fetch(&list, subscription, Int32(batch), remaining, &errorCode)
            } while status == NATS_TIMEOUT && deadline - clock.now > .milliseconds(20)
            if status == NATS_TIMEOUT { return [] }
            guard status == NATS_OK else {
                throw ProdReadyError(.serverError, "JetStream fetch for '\(name)' failed: \(lastErrorText(status))", retriable: isRetriable(status))
            }
            // Take ownership of each message, then free only the list's array.
            var messages: [SendableHandle] = []
            for index in 0..<Int(list.Count) {
                if let message = list.Msgs[index] { messages.append(SendableHandle(message)) }
                list.Msgs[index] = nil
            }
            natsMsgList_Destroy(&list)
            return messages
        }
        return pointers.map { JetStreamMessage(message: $0.pointer, connection: connection) }
    }

    deinit {
        let subscription = SendableHandle(subscription)
        executor.submit { natsSubscription_Destroy(subscription.pointer) }
    }
}

// MARK: - Core NATS

/// A core NATS message (no JetStream).
public struct NATSMessage: Sendable {
    public var subject: String
    public var replyTo: String?
    public var payload: [UInt8]
}

/// A core subscription read one message at a time; waits happen on the subscription's own executor.
public final class NATSSubscription: @unchecked Sendable {
    // @unchecked Sendable: libnats subscriptions are thread-safe; `subscription` is used on `executor` only.
    private let subscription: OpaquePointer
    private let executor: BlockingExecutor

    init(subscription: OpaquePointer, label: String) {
        self.subscription = subscription
        executor = BlockingExecutor(label: "nats.sub.\(label)")
    }

    /// The next message, or nil when none arrived within `timeout`.
    public func next(timeout: Duration) async throws -> NATSMessage? {
        try await executor.run { [self] in
            var message: OpaquePointer?
            let status = natsSubscription_NextMsg(&message, subscription, max(1, timeout.wholeMilliseconds))
            if status == NATS_TIMEOUT { return nil }
            guard status == NATS_OK, let message else {
                throw ProdReadyError(.serverError, "NATS subscription read failed: \(lastErrorText(status))", retriable: isRetriable(status))
            }
            defer { natsMsg_Destroy(message) }
            return NATSMessage(message)
        }
    }

    deinit {
        let subscription = SendableHandle(subscription)
        executor.submit {
            natsSubscription_Unsubscribe(subscription.pointer)
            natsSubscription_Destroy(subscription.pointer)
        }
    }
}

extension NATSMessage {
    init(_ message: OpaquePointer) {
        subject = natsMsg_GetSubject(message).map { String(cString: $0) } ?? ""
        replyTo = natsMsg_GetReply(message).map { String(cString: $0) }
        let length = Int(natsMsg_GetDataLength(message))
        payload = natsMsg_GetData(message).map { [UInt8](UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
    }
}

extension NATSConnection {
    /// Core publish (fire and forget; `flush` confirms the server has it).
    public func publishCore(subject: String, payload: [UInt8], replyTo: String? = nil) async throws {
        try NATSSubject.validate(subject, wildcardsAllowed: false)
        if let replyTo { try NATSSubject.validate(replyTo, wildcardsAllowed: false) }
        try await executor.run { [self] in
            let status = payload.withUnsafeBytes { bytes in
                if let replyTo {
                    natsConnection_PublishRequest(handles.connection, subject, replyTo, bytes.baseAddress, Int32(bytes.count))
                } else {
                    natsConnection_Publish(handles.connection, subject, bytes.baseAddress, Int32(bytes.count))
                }
            }
            guard status == NATS_OK else {
                throw ProdReadyError(status == NATS_MAX_PAYLOAD || status == NATS_INVALID_ARG ? .invalidArgument : .connectionFailed,
                                     "NATS publish to '\(subject)' failed: \(lastErrorText(status))", retriable: isRetriable(status))
            }
        }
    }

    /// Subscribes to `subject` (wildcards allowed), in a queue group when `queue` is given.
    public func subscribe(subject: String, queue: String? = nil) async throws -> NATSSubscription {
        try NATSSubject.validate(subject, wildcardsAllowed: true)
        let handle: SendableHandle = try await executor.run { [self] in
            var subscription: OpaquePointer?
            let status = queue.map { natsConnection_QueueSubscribeSync(&subscription, handles.connection, subject, $0) }
                ?? natsConnection_SubscribeSync(&subscription, handles.connection, subject)
            guard status == NATS_OK, let subscription else {
                throw ProdReadyError(.serverError, "NATS subscribe to '\(subject)' failed: \(lastErrorText(status))", retriable: isRetriable(status))
            }
            // Make sure the server registered the interest before anyone publishes.
            _ = natsConnection_FlushTimeout(handles.connection, 2000)
            return SendableHandle(subscription)
        }
        return NATSSubscription(subscription: handle.pointer, label: subject)
    }

    /// Request/reply: publishes with a fresh inbox and waits for the first answer. `timeout` when nobody
    /// answered in time (or nobody listens at all).
    public func request(subject: String, payload: [UInt8], timeout: Duration = .seconds(2)) async throws -> NATSMessage {
        try NATSSubject.validate(subject, wildcardsAllowed: false)
        let requests = BlockingExecutor(label: "nats.request")
        return try await requests.run { [self] in
            var reply: OpaquePointer?
            let status = payload.withUnsafeBytes { bytes in
                natsConnection_Request(&reply, handles.connection, subject, bytes.baseAddress, Int32(bytes.count), max(1, timeout.wholeMilliseconds))
            }
            guard status == NATS_OK, let reply else {
                if status == NATS_TIMEOUT || status == NATS_NO_RESPONDERS {
                    throw ProdReadyError(.timeout, "no reply on '\(subject)' within \(timeout): \(statusText(status))", retriable: true)
                }
                throw ProdReadyError(.connectionFailed, "NATS request on '\(subject)' failed: \(lastErrorText(status))", retriable: isRetriable(status))
            }
            defer { natsMsg_Destroy(reply) }
            return NATSMessage(reply)
        }
    }
}

/// NATS subject rules, checked before anything is sent.
public enum NATSSubject {
    /// A subject must be non-empty, without spaces or empty tokens, and (to publish on) without wildcards.
    public static func validate(_ subject: String, wildcardsAllowed: Bool) throws {
        let tokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        guard !subject.isEmpty, !subject.contains(where: \.isWhitespace), tokens.allSatisfy({ !$0.isEmpty }) else {
            throw ProdReadyError(.invalidArgument, "NATS subject must be non-empty dot-separated tokens with no spaces, got '\(subject)'")
        }
        if !wildcardsAllowed, tokens.contains(where: { $0 == "*" || $0 == ">" }) {
            throw ProdReadyError(.invalidArgument, "cannot publish to a wildcard subject '\(subject)'")
        }
    }
}

func isRetriable(_ status: natsStatus) -> Bool {
    [NATS_TIMEOUT, NATS_NO_RESPONDERS, NATS_CONNECTION_CLOSED, NATS_CONNECTION_DISCONNECTED, NATS_IO_ERROR,
     NATS_STALE_CONNECTION, NATS_SLOW_CONSUMER].contains(status)
}

/// libnats' last error text for this thread (more precise than the status name), or the status name.
func lastErrorText(_ status: natsStatus) -> String {
    let text = nats_GetLastError(nil).map { String(cString: $0) } ?? ""
    return text.isEmpty ? statusText(status) : text
}

/// Runs `body` with C copies of `strings`, freed afterwards.
func withCStrings<Result>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) throws -> Result) rethrows -> Result {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    return try body(copies.map { UnsafePointer($0) })
}
