public import ProdReadyCore
import CRdKafka
import Synchronization

/// A record header.
public struct KafkaHeader: Sendable, Equatable {
    public var name: String
    public var value: [UInt8]?

    public init(_ name: String, _ value: [UInt8]?) {
        self.name = name
        self.value = value
    }

    public init(_ name: String, _ text: String) {
        self.init(name, Array(text.utf8))
    }
}

/// One message to produce.
public struct KafkaOutgoing: Sendable {
    public var topic: String
    /// Messages with the same key go to the same partition, so their order holds.
    public var key: [UInt8]?
    public var value: [UInt8]
    public var headers: [KafkaHeader]

    public init(topic: String, key: [UInt8]? = nil, value: [UInt8], headers: [KafkaHeader] = []) {
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = headers
    }
}

/// Where one produced message ends up: told to its batch by librdkafka's background thread. One allocation
/// per message; the topic is the sender's string, so a report costs no copy of it.
private final class DeliverySlot: Sendable {
    let latch: BatchLatch
    let index: Int
    let topic: String

    init(latch: BatchLatch, index: Int, topic: String) {
        self.latch = latch
        self.index = index
        self.topic = topic
    }
}

/// Delivery reports arrive as events on librdkafka's background thread; no poll loop is needed.
private let deliveryEventCallback: @convention(c) (OpaquePointer?, OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { _, event, _ in
    guard let event else { return }
    defer { rd_kafka_event_destroy(event) }
    guard rd_kafka_event_type(event) == RD_KAFKA_EVENT_DR else { return }
    while let message = rd_kafka_event_message_next(event) {
        guard let opaque = message.pointee._private else { continue }
        let slot = Unmanaged<DeliverySlot>.fromOpaque(opaque).takeRetainedValue()
        let code = message.pointee.err
        if code == RD_KAFKA_RESP_ERR_NO_ERROR {
            slot.latch.record(slot.index, .success(KafkaDeliveryReport(topic: slot.topic, partition: message.pointee.partition, offset: message.pointee.offset)))
        } else {
            slot.latch.record(slot.index, .failure(deliveryError(code)))
        }
    }
}

private func deliveryError(_ code: rd_kafka_resp_err_t) -> ProdReadyError {
    switch code {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
        ProdReadyError(.invalidArgument, "Kafka refused the message: \(kafkaErrorDescription(code))")
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
        ProdReadyError(.notFound, "Kafka delivery failed: \(kafkaErrorDescription(code))", retriable: true)
    case RD_KAFKA_RESP_ERR_PRODUCER_FENCED, RD_KAFKA_RESP_ERR__FENCED, RD_KAFKA_RESP_ERR__FATAL:
        ProdReadyError(KafkaProducer.fencedCode, "Kafka delivery failed: \(kafkaErrorDescription(code)); the next send uses a new producer id", retriable: true)
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
        ProdReadyError(.timeout, "Kafka delivery timed out (no broker acknowledged it within the delivery timeout)", retriable: true)
    default:
        ProdReadyError(.serverError, "Kafka delivery failed: \(kafkaErrorDescription(code))", retriable: true)
    }
}

/// A Kafka producer, idempotent unless asked otherwise (no duplicates or reordering when librdkafka retries).
///
/// `send` returns once the broker acknowledged the message (or it failed); many concurrent sends are batched by
/// librdkafka. Delivery reports come back on librdkafka's background thread, so nothing has to poll. Call
/// `flush` before dropping a producer that may still hold messages.
public final class KafkaProducer: Sendable {
    private let configuration: KafkaConfiguration
    private let idempotent: Bool
    /// Replaced when the broker fences the producer id for good (see `replaceIfFenced`).
    private let current: Mutex<KafkaHandle>

    /// - Parameter idempotent: no duplicates or reordering on retries (the default); a health probe that only
    ///   needs one round trip can do without the producer-id handshake.
    public init(configuration: KafkaConfiguration, idempotent: Bool = true) throws {
        self.configuration = configuration
        self.idempotent = idempotent
        current = Mutex(try Self.makeHandle(configuration: configuration, idempotent: idempotent))
    }

    private var handle: KafkaHandle { current.withLock { $0 } }

    private static func makeHandle(configuration: KafkaConfiguration, idempotent: Bool) throws -> KafkaHandle {
        let handle = try KafkaHandle(
            type: RD_KAFKA_PRODUCER,
            configuration: configuration,
            extra: [("enable.idempotence", idempotent ? "true" : "false"), ("acks", "all")],
            prepare: { conf in
                rd_kafka_conf_set_events(conf, Int32(RD_KAFKA_EVENT_DR))
                rd_kafka_conf_set_background_event_cb(conf, deliveryEventCallback)
            }
        )
        // Delivery-report events land on the main queue; forwarded to the background queue, librdkafka's
        // background thread hands them to `deliveryEventCallback` without anyone polling.
        let main = rd_kafka_queue_get_main(handle.pointer)
        let background = rd_kafka_queue_get_background(handle.pointer)
        defer {
            rd_kafka_queue_destroy(main)
            if let background { rd_kafka_queue_destroy(background) }
        }
        guard let background else {
            throw ProdReadyError(.protocolError, "librdkafka did not start its background thread for delivery reports")
        }
        rd_kafka_queue_forward(main, background)
        return handle
    }

    /// An idempotent producer whose id the broker fenced, or that librdkafka declared fatally failed, never
    /// delivers again: every later send fails. Brokers without KIP-360 (Tansu 0.6) fence a producer whose
    /// message timed out while they were down, since librdkafka then asks to bump the epoch of its existing id.
    /// The failed messages were reported to their senders; from the next send on a new handle (a new producer id)
    /// takes over, so the same `KafkaProducer` recovers after an outage.
    private func replaceIfFenced(_ failed: KafkaHandle, outcomes: [Result<KafkaDeliveryReport, ProdReadyError>]) {
        let fenced = outcomes.contains { if case .failure(let error) = $0 { error.code == Self.fencedCode } else { false } }
        guard fenced || rd_kafka_fatal_error(failed.pointer, nil, 0) != RD_KAFKA_RESP_ERR_NO_ERROR,
              let replacement = try? Self.makeHandle(configuration: configuration, idempotent: idempotent) else { return }
        current.withLock { handle in
            if handle === failed { handle = replacement }
        }
    }

    static let fencedCode = ProdReadyError.Code("kafka_producer_fenced")

    public func metadata(timeout: Duration = .seconds(5)) async throws -> KafkaClusterMetadata {
        try await handle.metadata(timeout: timeout)
    }

    /// Sends one message and waits for the broker's acknowledgement. A broker that stays away fails the
    /// message after the configuration's delivery timeout with a retriable `timeout`.
    public func send(_ message: KafkaOutgoing) async throws -> KafkaDeliveryReport {
        try await send(batch: [message])[0].get()
    }

    /// Sends one message (the `KafkaOutgoing` form without headers).
    @discardableResult
    public func send(topic: String, key: [UInt8]?, value: [UInt8]) async throws -> KafkaDeliveryReport {
        try await send(KafkaOutgoing(topic: topic, key: key, value: value))
    }

    /// Sends `messages` (librdkafka batches them) and waits for every delivery report; the outcome of each, in
    /// order. A message refused before sending (bad topic, too large, queue full for too long) fails alone.
    public func send(batch messages: [KafkaOutgoing]) async throws -> [Result<KafkaDeliveryReport, ProdReadyError>] {
        let handle = self.handle
        let latch = BatchLatch(count: messages.count)
        for (index, message) in messages.enumerated() {
            do {
                try Self.validate(message)
            } catch let error as ProdReadyError {
                latch.record(index, .failure(error))
                continue
            }
            var waited = Duration.zero
            while true {
                let refusal = enqueue(message, on: handle, slot: DeliverySlot(latch: latch, index: index, topic: message.topic))
                guard let refusal else { break }
                if refusal.code == Self.queueFull && waited < Self.queueFullPatience {
                    try await Task.sleep(for: .milliseconds(5))
                    waited += .milliseconds(5)
                    continue
                }
                latch.record(index, .failure(refusal))
                break
            }
        }
        let outcomes = await latch.wait()
        replaceIfFenced(handle, outcomes: outcomes)
        return outcomes
    }

    /// Waits until every queued message is delivered or failed (call before shutting down).
    public func flush(timeout: Duration = .seconds(10)) async throws {
        try await handle.executor.run { [handle] in
            let code = rd_kafka_flush(handle.pointer, Int32(timeout.wholeMilliseconds))
            guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw ProdReadyError(.timeout, "\(rd_kafka_outq_len(handle.pointer)) Kafka messages still undelivered after \(timeout)", retriable: true)
            }
        }
    }

    static func validate(_ message: KafkaOutgoing) throws {
        try validateTopicName(message.topic)
        guard message.headers.allSatisfy({ !$0.name.isEmpty }) else {
            throw ProdReadyError(.invalidArgument, "Kafka header names must not be empty")
        }
    }

    static let queueFull = ProdReadyError.Code("kafka_queue_full")
    static let queueFullPatience = Duration.seconds(30)

    /// Hands one message to librdkafka; the refusal if it would not take it (the slot is then released unused).
    private func enqueue(_ message: KafkaOutgoing, on handle: KafkaHandle, slot: DeliverySlot) -> ProdReadyError? {
        let opaque = Unmanaged.passRetained(slot).toOpaque()
        let code = produce(message, on: handle, opaque: opaque)
        if code == RD_KAFKA_RESP_ERR_NO_ERROR { return nil }
        Unmanaged<DeliverySlot>.fromOpaque(opaque).release()
        if code == RD_KAFKA_RESP_ERR__QUEUE_FULL {
            return ProdReadyError(Self.queueFull, "librdkafka's queue for '\(message.topic)' stayed full for \(Self.queueFullPatience)", retriable: true)
        }
        return ProdReadyError(
            code == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? .invalidArgument : .serverError,
            "Kafka produce to '\(message.topic)' refused: \(kafkaErrorDescription(code))"
        )
    }

    /// One rd_kafka_produceva call (thread-safe and non-blocking, so it runs on the caller's thread).
    private func produce(_ message: KafkaOutgoing, on handle: KafkaHandle, opaque: UnsafeMutableRawPointer) -> rd_kafka_resp_err_t {
        var headers: OpaquePointer?
        if !message.headers.isEmpty {
            headers = rd_kafka_headers_new(message.headers.count)
            for header in message.headers {
                if let value = header.value {
                    value.withUnsafeBytes { _ = rd_kafka_header_add(headers, header.name, -1, $0.baseAddress, $0.count) }
                } else {
                    _ = rd_kafka_header_add(headers, header.name, -1, nil, 0)
                }
            }
        }
        let key = message.key ?? []
        let code: rd_kafka_resp_err_t = message.topic.withCString { topic in
            message.value.withUnsafeBytes { value in
                key.withUnsafeBytes { keyBytes in withUnsafeTemporaryAllocation(of: rd_kafka_vu_t.self, capacity: 6) { values in
                    values.initialize(repeating: rd_kafka_vu_t())
                    values[0].vtype = RD_KAFKA_VTYPE_TOPIC
                    values[0].u.cstr = topic
                    values[1].vtype = RD_KAFKA_VTYPE_VALUE
                    values[1].u.mem.ptr = UnsafeMutableRawPointer(mutating: value.baseAddress)
                    values[1].u.mem.size = value.count
                    values[2].vtype = RD_KAFKA_VTYPE_MSGFLAGS
                    values[2].u.i = RD_KAFKA_MSG_F_COPY
                    values[3].vtype = RD_KAFKA_VTYPE_OPAQUE
                    values[3].u.ptr = opaque
                    var count = 4
                    if message.key != nil {
                        values[count].vtype = RD_KAFKA_VTYPE_KEY
                        values[count].u.mem.ptr = UnsafeMutableRawPointer(mutating: keyBytes.baseAddress)
                        values[count].u.mem.size = keyBytes.count
                        count += 1
                    }
                    if let headers {
                        values[count].vtype = RD_KAFKA_VTYPE_HEADERS
                        values[count].u.headers = headers
                        count += 1
                    }
                    guard let error = rd_kafka_produceva(handle.pointer, values.baseAddress, count) else { return RD_KAFKA_RESP_ERR_NO_ERROR }
                    defer { rd_kafka_error_destroy(error) }
                    return rd_kafka_error_code(error)
                } }
            }
        }
        // On success librdkafka owns the headers; on failure they are still ours.
        if code != RD_KAFKA_RESP_ERR_NO_ERROR, let headers { rd_kafka_headers_destroy(headers) }
        return code
    }
}

/// Collects a batch's outcomes as their reports arrive and wakes the sender when the last one is in.
private final class BatchLatch: Sendable {
    private struct State {
        var outcomes: [Result<KafkaDeliveryReport, ProdReadyError>?]
        var remaining: Int
        var waiter: CheckedContinuation<[Result<KafkaDeliveryReport, ProdReadyError>], Never>?
    }
    private let state: Mutex<State>

    init(count: Int) {
        state = Mutex(State(outcomes: Array(repeating: nil, count: count), remaining: count, waiter: nil))
    }

    func record(_ index: Int, _ result: Result<KafkaDeliveryReport, ProdReadyError>) {
        let finished: (CheckedContinuation<[Result<KafkaDeliveryReport, ProdReadyError>], Never>, [Result<KafkaDeliveryReport, ProdReadyError>])? = state.withLock { state in
            state.outcomes[index] = result
            state.remaining -= 1
            guard state.remaining == 0, let waiter = state.waiter else { return nil }
            state.waiter = nil
            return (waiter, state.outcomes.map { $0! })
        }
        if let (waiter, outcomes) = finished { waiter.resume(returning: outcomes) }
    }

    func wait() async -> [Result<KafkaDeliveryReport, ProdReadyError>] {
        await withCheckedContinuation { continuation in
            let ready: [Result<KafkaDeliveryReport, ProdReadyError>]? = state.withLock { state in
                if state.remaining == 0 { return state.outcomes.map { $0! } }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// Kafka's own rule for topic names, checked before anything is sent.
func validateTopicName(_ topic: String) throws {
    guard !topic.isEmpty, topic.utf8.count <= 249,
          topic.utf8.allSatisfy({ byte in
              (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                  || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
          }) else {
        throw ProdReadyError(.invalidArgument, "Kafka topic names are 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-', got '\(topic)'")
    }
}
