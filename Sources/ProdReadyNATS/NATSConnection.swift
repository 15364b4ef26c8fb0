import ProdReadyCore
import CNats
#if canImport(Glibc)
import Glibc
#endif

/// Stream settings for `NATSConnection.createOrUpdateStream`.
public struct JetStreamStreamConfiguration: Sendable, Equatable {
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

/// A stream as the server reports it.
public struct JetStreamStreamInfo: Sendable {
    public var configuration: JetStreamStreamConfiguration
    public var messages: UInt64
    public var firstSequence: UInt64
    public var lastSequence: UInt64
}

/// A connection's state and traffic counts.
public struct NATSStatistics: Sendable, Equatable {
    public var connected = false
    public var inMessages: UInt64 = 0
    public var inBytes: UInt64 = 0
    public var outMessages: UInt64 = 0
    public var outBytes: UInt64 = 0
    public var reconnects: UInt64 = 0
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
    // @unchecked Sendable: libnats handles are thread-safe; they are used only on executors (this connection's
    // serial queue, or a subscription's own queue for calls that block while waiting for messages).
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

    /// A stream's live configuration and state, as the server holds them: what a configuration check compares
    /// with the settings the publishers and consumers rely on.
    public func streamInfo(_ name: String) async throws -> JetStreamStreamInfo {
        guard !name.isEmpty else { throw ProdReadyError(.invalidArgument, "stream info needs a stream name") }
        return try await executor.run { [self] in
            let jetStream = self.jetStream
            var info: UnsafeMutablePointer<jsStreamInfo>?
            var errorCode = jsErrCode(0)
            let status = js_GetStreamInfo(&info, jetStream, name, nil, &errorCode)
            guard status == NATS_OK, let info else {
                if errorCode == JSStreamNotFoundErr { throw ProdReadyError(.notFound, "no JetStream stream '\(name)'") }
                throw ProdReadyError(.serverError, "stream info for '\(name)' failed: \(statusText(status)) (JetStream error \(errorCode.rawValue))", retriable: status == NATS_TIMEOUT)
            }
            defer { jsStreamInfo_Destroy(info) }
            guard let config = info.pointee.Config?.pointee else {
                throw ProdReadyError(.protocolError, "stream info for '\(name)' came without its configuration")
            }
            let subjects = (0..<Int(config.SubjectsLen)).compactMap { index in config.Subjects?[index].map { String(cString: $0) } }
            var configuration = JetStreamStreamConfiguration(name: config.Name.map { String(cString: $0) } ?? name, subjects: subjects)
            configuration.fileStorage = config.Storage == js_FileStorage
            configuration.duplicateWindow = .nanoseconds(config.Duplicates)
            // 0 (or -1 for the counts) is the server's "unlimited".
            configuration.maxAge = config.MaxAge > 0 ? .nanoseconds(config.MaxAge) : nil
            configuration.maxBytes = config.MaxBytes > 0 ? config.MaxBytes : nil
            configuration.maxMessages = config.MaxMsgs > 0 ? config.MaxMsgs : nil
            let state = info.pointee.State
            return JetStreamStreamInfo(configuration: configuration, messages: state.Msgs, firstSequence: state.FirstSeq, lastSequence: state.LastSeq)
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
        try NATSSubject.validate(subject, wildcardsAllowed: false)
        if let messageID, messageID.isEmpty { throw ProdReadyError(.invalidArgument, "a Nats-Msg-Id must not be empty") }
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
                throw publishError(status, subject: subject)
            }
            defer { jsPubAck_Destroy(ack) }
            return JetStreamPublishAck(stream: String(cString: ack.pointee.Stream), sequence: ack.pointee.Sequence, duplicate: ack.pointee.Duplicate)
        }
    }

    /// Whether the connection is up, and what it has carried since it opened (for health documents).
    public func statistics() async throws -> NATSStatistics {
        try await executor.run { [self] in
            var stats: OpaquePointer?
            try check(natsStatistics_Create(&stats), "statistics")
            defer { natsStatistics_Destroy(stats) }
            try check(natsConnection_GetStats(connection, stats), "statistics")
            var result = NATSStatistics()
            try check(natsStatistics_GetCounts(stats, &result.inMessages, &result.inBytes, &result.outMessages, &result.outBytes, &result.reconnects), "statistics")
            result.connected = natsConnection_Status(connection) == NATS_CONN_STATUS_CONNECTED
            return result
        }
    }

    /// Creates (or binds to) a durable pull consumer on `subject` with default settings.
    public func pullSubscribe(subject: String, durable: String) async throws -> JetStreamPullSubscription {
        try await pullSubscribe(subject: subject, consumer: JetStreamConsumerConfiguration(durable: durable))
    }

    /// The libnats handles, for the other files of this module (only to be used on an executor).
    var handles: (connection: OpaquePointer, jetStream: OpaquePointer) { (connection, jetStream) }
}

private func check(_ status: natsStatus, _ what: String) throws {
    guard status == NATS_OK else {
        throw ProdReadyError(.invalidArgument, "NATS \(what) failed: \(statusText(status))")
    }
}

func statusText(_ status: natsStatus) -> String {
    String(cString: natsStatus_GetText(status))
}

