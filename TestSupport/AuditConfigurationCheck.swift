public import ProdReadyCore
public import ProdReadyVerification

/// The live settings the audit flow's exactly-once design depends on, read from where each really lives: the
/// stream's and the consumer's from the NATS server, the relay's timing and the workers' lease from the OMS's
/// `/api/v1/system/config`, the consumer's configured values and its longest batch from the audit service's.
public struct AuditFlowLiveSettings: Sendable, Equatable {
    /// The stream's duplicate window, from the server.
    public var streamDuplicateWindow: Duration
    /// The duplicate window each service creates the stream with (whoever starts last sets it).
    public var omsDuplicateWindow: Duration
    public var auditDuplicateWindow: Duration
    /// How long after a publish the stream stored the relay may send the same event again.
    public var relayRetryHorizon: Duration
    /// The durable consumer's ack wait as the server holds it, and as the audit service was started with.
    public var consumerAckWait: Duration
    public var configuredAckWait: Duration
    /// The longest a fetched batch went without an ack or an in-progress signal, since the audit service started.
    public var longestBatchSilence: Duration
    public var workerLease: Duration
    public var workerHeartbeat: Duration

    public init(
        streamDuplicateWindow: Duration, omsDuplicateWindow: Duration, auditDuplicateWindow: Duration, relayRetryHorizon: Duration, consumerAckWait: Duration,
        configuredAckWait: Duration, longestBatchSilence: Duration, workerLease: Duration, workerHeartbeat: Duration
    ) {
        self.streamDuplicateWindow = streamDuplicateWindow
        self.omsDuplicateWindow = omsDuplicateWindow
        self.auditDuplicateWindow = auditDuplicateWindow
        self.relayRetryHorizon = relayRetryHorizon
        self.consumerAckWait = consumerAckWait
        self.configuredAckWait = configuredAckWait
        self.longestBatchSilence = longestBatchSilence
        self.workerLease = workerLease
        self.workerHeartbeat = workerHeartbeat
    }

    /// Reads the two services' configuration documents; the stream's and the consumer's values come from NATS.
    public init(oms: JSONValue, audit: JSONValue, streamDuplicateWindow: Duration, consumerAckWait: Duration) throws {
        func seconds(_ document: JSONValue, _ path: String...) throws -> Duration {
            var value: JSONValue? = document
            for key in path { value = value?[key] }
            let number: Double? = switch value {
            case .double(let number): number
            case .int(let number): Double(number)
            default: nil
            }
            guard let number else {
                throw ProdReadyError(.protocolError, "the configuration document has no number at \(path.joined(separator: ".")): \(document)")
            }
            return .milliseconds(Int64((number * 1_000).rounded()))
        }
        self.init(
            streamDuplicateWindow: streamDuplicateWindow,
            omsDuplicateWindow: try seconds(oms, "audit_stream", "duplicate_window_seconds"),
            auditDuplicateWindow: try seconds(audit, "stream", "duplicate_window_seconds"),
            relayRetryHorizon: try seconds(oms, "outbox_relay", "retry_horizon_seconds"),
            consumerAckWait: consumerAckWait,
            configuredAckWait: try seconds(audit, "consumer", "ack_wait_seconds"),
            longestBatchSilence: try seconds(audit, "consumer", "longest_batch_silence_seconds"),
            workerLease: try seconds(oms, "workers", "lease_seconds"),
            workerHeartbeat: try seconds(oms, "workers", "heartbeat_seconds"))
    }

    /// Every invariant, held or not (SPEC-services "Configuration invariants").
    public var invariants: [ConfigurationInvariant] {
        typealias Setting = ConfigurationInvariant.Setting<Duration>
        return [
            .atLeast(
                "the stream's duplicate window covers the relay's retry horizon, or a late retry of an event the stream took is stored twice",
                Setting("stream duplicate window (NATS)", streamDuplicateWindow), Setting("relay retry horizon (OMS config)", relayRetryHorizon)),
            .equal(
                "the stream keeps the duplicate window the OMS's relay creates it with, or each restart of a service changes it",
                Setting("stream duplicate window (NATS)", streamDuplicateWindow), Setting("OMS's window (OMS config)", omsDuplicateWindow)),
            .equal(
                "the stream keeps the duplicate window the audit service creates it with",
                Setting("stream duplicate window (NATS)", streamDuplicateWindow), Setting("audit's window (audit config)", auditDuplicateWindow)),
            .below(
                "the consumer's ack wait is below the duplicate window",
                Setting("consumer ack wait (NATS)", consumerAckWait), Setting("stream duplicate window (NATS)", streamDuplicateWindow)),
            .equal(
                "the durable consumer on the server has the ack wait the audit service was started with (a durable made earlier keeps its own)",
                Setting("consumer ack wait (NATS)", consumerAckWait), Setting("configured ack wait (audit config)", configuredAckWait)),
            .below(
                "every batch was acknowledged or marked in progress within the ack wait, or the server redelivers batches still being stored",
                Setting("longest batch silence (audit config)", longestBatchSilence), Setting("consumer ack wait (NATS)", consumerAckWait)),
            .atLeast(
                "a worker's lease is at least three heartbeats, so two missed beats still keep it",
                Setting("worker lease (OMS config)", workerLease), Setting("3 × heartbeat (OMS config)", workerHeartbeat * 3)),
        ]
    }
}
