import ProdReadyCore
import CNats
#if canImport(Glibc)
import Glibc
#endif

/// Stream settings for `NATSConnection.createOrUpdateStream`.
public struct JetStreamStreamConfiguration: Sendable {
    public var name: String
    public var subjects: [String]
    /// File storage survives server restarts; memory storage does not.
    public var fileStorage: Bool = true
    /// Window in which a repeated `Nats-Msg-Id` is acknowledged as a duplicate and not stored again.
    public var duplicateWindow: Duration = .seconds(120)
    public var maxAge: Duration? = nil
    public var maxBytes: Int64? = nil
    public var maxMessages: Int64? = nil

    public init(name: String, subjects: [String]) {
        self.name = name
        self.subjects = subjects
    }
}

/// The server's acknowledgement of a JetStream publish.
public struct JetStreamPublishAck: Sendable, Equatable {
    public var stream: String
    public var sequence: UInt64
    public var duplicate: Bool
}

/// A NATS connection with JetStream. Reconnects by itself (libnats keeps retrying forever and buffers
/// publishes while disconnected); every libnats call runs on the connection's own blocking executor.
public final class NATSConnection: @unchecked Sendable {
    // @unchecked Sendable: the libnats handles below are only used on `executor`'s serial queue.
    private let connection: OpaquePointer
    private let jetStream: OpaquePointer
    let executor: BlockingExecutor

    /// Connects (on the connection's own executor: the first connect blocks up to `connectTimeout`).
    /// - Parameters:
    ///   - url: `nats://host:port`.
    ///   - connectTimeout: how long the first connect may take.
    public init(url: String, name: String = "prodready", connectTimeout: Duration = .seconds(2)) async throws {
        guard url.hasPrefix("nats://") || url.hasPrefix("tls://"), url.count > 7 else {
            throw ProdReadyError(.invalidArgument, "NATS URL must look like nats://host:port, got '\(url)'")
        }
        let executor = BlockingExecutor(label: "nats.\(name)")
        let (connection, jetStream) = try await executor.run { () throws -> (SendableHandle, SendableHandle) in
            var options: OpaquePointer?
            try check(natsOptions_Create(&options), "create options")
            defer { natsOptions_Destroy(options) }
            try check(natsOptions_SetURL(options, url), "set URL")
            try check(natsOptions_SetName(options, name), "set name")
            try check(natsOptions_SetTimeout(options, connectTimeout.wholeMilliseconds), "set timeout")
            try check(natsOptions_SetAllowReconnect(options, true), "allow reconnect")
            try check(natsOptions_SetMaxReconnect(options, -1), "set max reconnect")
            try check(natsOptions_SetReconnectWait(options, 100), "set reconnect wait")

            var connection: OpaquePointer?
            let status = natsConnection_Connect(&connection, options)
            guard status == NATS_OK, let connection else {
                throw ProdReadyError(.connectionFailed, "cannot connect to NATS at \(redacted(url)): \(statusText(status))", retriable: true)
            }
            var jetStream: OpaquePointer?
            let jsStatus = natsConnection_JetStream(&jetStream, connection, nil)
            guard jsStatus == NATS_OK, let jetStream else {
                natsConnection_Destroy(connection)
                throw ProdReadyError(.protocolError, "cannot open a JetStream context: \(statusText(jsStatus))")
            }
            return (SendableHandle(connection), SendableHandle(jetStream))
        }
        self.connection = connection.pointer
        self.jetStream = jetStream.pointer
        self.executor = executor
    }

    deinit {
        // Destroying closes the socket and joins libnats' threads: off the thread that dropped the reference.
        let jetStream = SendableHandle(jetStream)
        let connection = SendableHandle(connection)
        executor.submit {
            jsCtx_Destroy(jetStream.pointer)
            natsConnection_Destroy(connection.pointer)
        }
    }

    /// One round trip to the server (PING/PONG).
    public func flush(timeout: Duration = .seconds(2)) async throws {
        try await executor.run { [self] in
            let connection = self.connection
            let status = natsConnection_FlushTimeout(connection, timeout.wholeMilliseconds)
            guard status == NATS_OK else {
                throw ProdReadyError(.connectionFailed, "NATS flush failed: \(statusText(status))", retriable: true)
            }
        }
    }

    public func createOrUpdateStream(_ stream: JetStreamStreamConfiguration) async throws {
        guard !stream.name.isEmpty, !stream.subjects.isEmpty, stream.subjects.allSatisfy({ !$0.isEmpty }) else {
            throw ProdReadyError(.invalidArgument, "a JetStream stream needs a name and at least one non-empty subject")
        }
        try await executor.run { [self] in
            let jetStream = self.jetStream
            var config = jsStreamConfig()
            jsStreamConfig_Init(&config)
            let name = strdup(stream.name)
            let subjects = stream.subjects.map { UnsafePointer(strdup($0)) }
            defer {
                free(name)
                subjects.forEach { free(UnsafeMutablePointer(mutating: $0)) }
            }
            var subjectPointers: [UnsafePointer<CChar>?] = subjects
            try subjectPointers.withUnsafeMutableBufferPointer { subjectBuffer in
                config.Name = UnsafePointer(name)
                config.Subjects = subjectBuffer.baseAddress
                config.SubjectsLen = Int32(subjectBuffer.count)
                config.Storage = stream.fileStorage ? js_FileStorage : js_MemoryStorage
                config.Duplicates = stream.duplicateWindow.wholeNanoseconds
                if let maxAge = stream.maxAge { config.MaxAge = maxAge.wholeNanoseconds }
                if let maxBytes = stream.maxBytes { config.MaxBytes = maxBytes }
                if let maxMessages = stream.maxMessages { config.MaxMsgs = maxMessages }
                var info: UnsafeMutablePointer<jsStreamInfo>?
                var errorCode = jsErrCode(0)
                var status = js_AddStream(&info, jetStream, &config, nil, &errorCode)
                if status != NATS_OK, errorCode == JSStreamNameExistErr {
                    status = js_UpdateStream(&info, jetStream, &config, nil, &errorCode)
                }
                if let info { jsStreamInfo_Destroy(info) }
                guard status == NATS_OK else {
                    throw ProdReadyError(.serverError, "creating JetStream stream '\(stream.name)' failed: \(statusText(status)) (JetStream error \(errorCode.rawValue))", retriable: status == NATS_TIMEOUT)
                }
            }
        }
    }

    public func deleteStream(_ name: String) async throws {
        try await executor.run { [self] in
            let jetStream = self.jetStream
            var errorCode = jsErrCode(0)
            let status = js_DeleteStream(jetStream, name, nil, &errorCode)
            guard status == NATS_OK || errorCode == JSStreamNotFoundErr else {
                throw ProdReadyError(.serverError, "deleting JetStream stream '\(name)' failed: \(statusText(status))")
            }
        }
    }

    /// Publishes and waits for the stream's acknowledgement. `messageID` becomes `Nats-Msg-Id`.
    public func publish(subject: String, payload: [UInt8], messageID: String? = nil, timeout: Duration = .seconds(5)) async throws -> JetStreamPublishAck {
        guard !subject.isEmpty, !subject.contains(" ") else {
            throw ProdReadyError(.invalidArgument, "NATS subject must be non-empty and contain no spaces, got '\(subject)'")
        }
        return try await executor.run { [self] in
            let jetStream = self.jetStream
            var options = jsPubOptions()
            jsPubOptions_Init(&options)
            options.MaxWait = timeout.wholeMilliseconds
            let id: UnsafeMutablePointer<CChar>? = messageID.flatMap { strdup($0) }
            defer { free(id) }
            options.MsgId = UnsafePointer(id)
            var ack: UnsafeMutablePointer<jsPubAck>?
            var errorCode = jsErrCode(0)
            let status = payload.withUnsafeBytes { bytes in
                js_Publish(&ack, jetStream, subject, bytes.baseAddress, Int32(bytes.count), &options, &errorCode)
            }
            guard status == NATS_OK, let ack else {
                throw ProdReadyError(
                    status == NATS_TIMEOUT || status == NATS_NO_RESPONDERS ? .timeout : .serverError,
                    "JetStream publish to '\(subject)' failed: \(statusText(status))",
                    retriable: status == NATS_TIMEOUT || status == NATS_NO_RESPONDERS || status == NATS_CONNECTION_CLOSED
                )
            }
            defer { jsPubAck_Destroy(ack) }
            return JetStreamPublishAck(stream: String(cString: ack.pointee.Stream), sequence: ack.pointee.Sequence, duplicate: ack.pointee.Duplicate)
        }
    }

    /// Creates (or binds to) a durable pull consumer on `subject`.
    public func pullSubscribe(subject: String, durable: String) async throws -> JetStreamPullSubscription {
        guard !subject.isEmpty, !durable.isEmpty else {
            throw ProdReadyError(.invalidArgument, "a pull subscription needs a subject and a durable name")
        }
        let subscription: SendableHandle = try await executor.run { [self] in
            let jetStream = self.jetStream
            var subscription: OpaquePointer?
            var errorCode = jsErrCode(0)
            let status = js_PullSubscribe(&subscription, jetStream, subject, durable, nil, nil, &errorCode)
            guard status == NATS_OK, let subscription else {
                throw ProdReadyError(.serverError, "pull subscribe to '\(subject)' failed: \(statusText(status)) (JetStream error \(errorCode.rawValue))")
            }
            return SendableHandle(subscription)
        }
        return JetStreamPullSubscription(subscription: subscription.pointer, connection: self)
    }
}

/// A consumed JetStream message; acknowledge it with `ack()`.
public final class JetStreamMessage: @unchecked Sendable {
    // @unchecked Sendable: `message` is only used on the owning connection's executor queue.
    private let message: OpaquePointer
    private let connection: NATSConnection
    public let payload: [UInt8]

    init(message: OpaquePointer, connection: NATSConnection) {
        self.message = message
        self.connection = connection
        let length = Int(natsMsg_GetDataLength(message))
        payload = natsMsg_GetData(message).map { [UInt8](UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
    }

    public func ack() async throws {
        try await connection.executor.run { [self] in
            let message = self.message
            var errorCode = jsErrCode(0)
            let status = natsMsg_AckSync(message, nil, &errorCode)
            guard status == NATS_OK else {
                throw ProdReadyError(.serverError, "JetStream ack failed: \(statusText(status))", retriable: true)
            }
        }
    }

    deinit {
        let message = SendableHandle(message)
        connection.executor.submit { natsMsg_Destroy(message.pointer) }
    }
}

/// A durable pull consumer.
public final class JetStreamPullSubscription: @unchecked Sendable {
    // @unchecked Sendable: `subscription` is only used on the owning connection's executor queue.
    private let subscription: OpaquePointer
    private let connection: NATSConnection

    init(subscription: OpaquePointer, connection: NATSConnection) {
        self.subscription = subscription
        self.connection = connection
    }

    /// Fetches up to `batch` messages, waiting at most `timeout`; an empty array when none arrived.
    public func fetch(batch: Int, timeout: Duration) async throws -> [JetStreamMessage] {
        let connection = self.connection
        let pointers: [SendableHandle] = try await connection.executor.run { [self] in
            let subscription = self.subscription
            var list = natsMsgList()
            var errorCode = jsErrCode(0)
            let status = natsSubscription_Fetch(&list, subscription, Int32(batch), timeout.wholeMilliseconds, &errorCode)
            if status == NATS_TIMEOUT { return [] }
            guard status == NATS_OK else {
                throw ProdReadyError(.serverError, "JetStream fetch failed: \(statusText(status))", retriable: true)
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
        connection.executor.submit { natsSubscription_Destroy(subscription.pointer) }
    }
}

private func check(_ status: natsStatus, _ what: String) throws {
    guard status == NATS_OK else {
        throw ProdReadyError(.invalidArgument, "NATS \(what) failed: \(statusText(status))")
    }
}

func statusText(_ status: natsStatus) -> String {
    String(cString: natsStatus_GetText(status))
}

