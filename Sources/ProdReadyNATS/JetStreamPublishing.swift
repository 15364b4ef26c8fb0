public import ProdReadyCore
import CNats
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One message for `NATSConnection.publishAsync`.
public struct JetStreamOutgoing: Sendable {
    public var subject: String
    public var payload: [UInt8]
    /// Sent as `Nats-Msg-Id`: the stream stores a repeated id only once within its duplicate window.
    public var messageID: String?

    public init(subject: String, payload: [UInt8], messageID: String? = nil) {
        self.subject = subject
        self.payload = payload
        self.messageID = messageID
    }
}

/// Collects the acknowledgements libnats delivers on its own thread, keyed by the message's address (every
/// message stays alive until the batch is over, so addresses are unique within it).
private final class AckCollector: Sendable {
    let results = Mutex<[UInt: Result<JetStreamPublishAck, ProdReadyError>]>([:])
}

private let asyncAckHandler: @convention(c) (OpaquePointer?, OpaquePointer?, UnsafeMutablePointer<jsPubAck>?, UnsafeMutablePointer<jsPubAckErr>?, UnsafeMutableRawPointer?) -> Void = { _, message, ack, failure, closure in
    guard let message, let closure else { return }
    let collector = Unmanaged<AckCollector>.fromOpaque(closure).takeUnretainedValue()
    let key = UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(message)))
    let result: Result<JetStreamPublishAck, ProdReadyError>
    if let ack {
        result = .success(JetStreamPublishAck(stream: String(cString: ack.pointee.Stream), sequence: ack.pointee.Sequence, duplicate: ack.pointee.Duplicate))
    } else {
        let status = failure?.pointee.Err ?? NATS_ERR
        let text = failure?.pointee.ErrText.map { String(cString: $0) } ?? statusText(status)
        let subject = natsMsg_GetSubject(message).map { String(cString: $0) } ?? "?"
        result = .failure(publishError(status, subject: subject, detail: text))
    }
    collector.results.withLock { $0[key] = result }
}

extension NATSConnection {
    /// Publishes `messages` with at most `window` unacknowledged at a time and waits (up to `timeout`) for every
    /// acknowledgement. A publish that finds the window full waits for a free slot (up to `timeout` too). Returns each message's outcome in order: its ack, or why it may not be stored (a
    /// message still unacknowledged at the deadline is a retriable `timeout`; publishing it again with the same
    /// `messageID` cannot store it twice).
    public func publishAsync(_ messages: [JetStreamOutgoing], window: Int = 256, timeout: Duration = .seconds(10)) async throws -> [Result<JetStreamPublishAck, ProdReadyError>] {
        guard (1...65_536).contains(window) else { throw ProdReadyError(.invalidArgument, "the publish window must be 1 to 65,536, got \(window)") }
        for message in messages {
            try NATSSubject.validate(message.subject, wildcardsAllowed: false)
            if let id = message.messageID, id.isEmpty { throw ProdReadyError(.invalidArgument, "a Nats-Msg-Id must not be empty") }
        }
        guard !messages.isEmpty else { return [] }
        // Waiting for acks blocks; a queue of its own keeps this connection's other calls moving meanwhile.
        let publisher = BlockingExecutor(label: "nats.publish-async")
        return try await publisher.run { [self] in
            let collector = AckCollector()
            let closure = Unmanaged.passRetained(collector)
            defer { closure.release() }
            var options = jsOptions()
            jsOptions_Init(&options)
            options.PublishAsync.MaxPending = Int64(window)
            // A full window is backpressure, not a failure: libnats waits only 200 ms for a free slot by default,
            // and a busy server (a loaded CI machine) took longer, so publishes failed while their acks were on
            // the way. A publish now waits for a slot as long as the whole call may take.
            options.PublishAsync.StallWait = max(1, timeout.wholeMilliseconds)
            options.PublishAsync.AckHandler = asyncAckHandler
            options.PublishAsync.AckHandlerClosure = closure.toOpaque()
            var context: OpaquePointer?
            let created = natsConnection_JetStream(&context, handles.connection, &options)
            guard created == NATS_OK, let context else {
                throw ProdReadyError(.serverError, "cannot open a JetStream context: \(lastErrorText(created))", retriable: isRetriable(created))
            }
            var keys: [UInt?] = []
            var owned: [OpaquePointer] = []
            var outcomes = [Result<JetStreamPublishAck, ProdReadyError>?](repeating: nil, count: messages.count)
            var reclaimed: Set<UInt> = []
            defer {
                jsCtx_Destroy(context)
                // The ack handler leaves messages to us; ones still pending were taken back (and freed) below.
                for message in owned where !reclaimed.contains(UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(message)))) {
                    natsMsg_Destroy(message)
                }
            }
            for (index, outgoing) in messages.enumerated() {
                var message: OpaquePointer?
                var status = outgoing.payload.withUnsafeBytes { natsMsg_Create(&message, outgoing.subject, nil, $0.baseAddress, Int32($0.count)) }
                guard status == NATS_OK, let message else {
                    outcomes[index] = .failure(ProdReadyError(.invalidArgument, "cannot build a message for '\(outgoing.subject)': \(lastErrorText(status))"))
                    keys.append(nil)
                    continue
                }
                owned.append(message)
                if let id = outgoing.messageID { _ = natsMsgHeader_Set(message, "Nats-Msg-Id", id) }
                keys.append(UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(message))))
                // js_PublishMsgAsync takes the message and clears our pointer; the ack handler gets it back.
                var handed: OpaquePointer? = message
                status = js_PublishMsgAsync(context, &handed, nil)
                if status != NATS_OK {
                    keys[index] = nil
                    outcomes[index] = .failure(publishError(status, subject: outgoing.subject))
                }
            }
            var complete = jsPubOptions()
            jsPubOptions_Init(&complete)
            complete.MaxWait = max(1, timeout.wholeMilliseconds)
            let completion = js_PublishAsyncComplete(context, &complete)
            if completion != NATS_OK {
                // Take the unacknowledged messages back from the context so destroying it cannot free them twice.
                var pending = natsMsgList()
                if js_PublishAsyncGetPendingList(&pending, context) == NATS_OK {
                    for index in 0..<Int(pending.Count) {
                        if let message = pending.Msgs[index] { reclaimed.insert(UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(message)))) }
                    }
                    natsMsgList_Destroy(&pending)
                }
            }
            let acknowledged = collector.results.withLock { $0 }
            return messages.indices.map { index in
                if let outcome = outcomes[index] { return outcome }
                if let key = keys[index], let result = acknowledged[key] { return result }
                return .failure(ProdReadyError(.timeout, "no JetStream ack for '\(messages[index].subject)' within \(timeout) (\(statusText(completion)))", retriable: true))
            }
        }
    }
}

func publishError(_ status: natsStatus, subject: String, detail: String? = nil) -> ProdReadyError {
    switch status {
    case NATS_MAX_PAYLOAD:
        ProdReadyError(.invalidArgument, "JetStream publish to '\(subject)' refused: the message is larger than the server's max_payload")
    case NATS_NO_RESPONDERS:
        // Retriable: the stream may be created (or the server come back) later.
        ProdReadyError(.notFound, "JetStream publish to '\(subject)': no stream captures this subject (no responders)", retriable: true)
    case NATS_TIMEOUT:
        ProdReadyError(.timeout, "JetStream publish to '\(subject)' got no ack in time", retriable: true)
    default:
        ProdReadyError(.serverError, "JetStream publish to '\(subject)' failed: \(detail ?? lastErrorText(status))", retriable: true)
    }
}
