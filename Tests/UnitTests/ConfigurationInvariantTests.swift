import ProdReadyCore
import ProdReadyVerification
import Testing
import TestSupport

@Suite("Configuration invariants of the audit flow, from live settings, no servers")
struct ConfigurationInvariantTests {
    /// The reference deployment's values: relay horizon 65 s under the 120 s window, ack wait 30 s.
    static let sound = AuditFlowLiveSettings(
        streamDuplicateWindow: .seconds(120), omsDuplicateWindow: .seconds(120), auditDuplicateWindow: .seconds(120), relayRetryHorizon: .seconds(65),
        consumerAckWait: .seconds(30), configuredAckWait: .seconds(30), longestBatchSilence: .milliseconds(40), workerLease: .seconds(5), workerHeartbeat: .seconds(1))

    static func broken(_ change: (inout AuditFlowLiveSettings) -> Void) -> AuditFlowLiveSettings {
        var settings = sound
        change(&settings)
        return settings
    }

    @Test("the reference deployment's settings hold every invariant")
    func soundSettingsHold() {
        #expect(Self.sound.invariants.count == 7)
        #expect(Self.sound.invariants.violations.isEmpty, "\(Self.sound.invariants.violations)")
    }

    @Test("each wrong-together pair is reported, naming both values and where each came from", arguments: [
        ("a 60 s duplicate window under a 65 s relay horizon", broken { s in s.streamDuplicateWindow = .seconds(60); s.omsDuplicateWindow = .seconds(60); s.auditDuplicateWindow = .seconds(60) },
         "stream duplicate window (NATS) = 60 s, relay retry horizon (OMS config) = 65 s"),
        ("the audit service creating the stream with another window", broken { s in s.auditDuplicateWindow = .seconds(300) },
         "stream duplicate window (NATS) = 120 s, audit's window (audit config) = 300 s"),
        ("a durable made earlier with another ack wait", broken { s in s.consumerAckWait = .seconds(10) },
         "consumer ack wait (NATS) = 10 s, configured ack wait (audit config) = 30 s"),
        ("an ack wait as long as the window", broken { s in s.consumerAckWait = .seconds(120); s.configuredAckWait = .seconds(120) },
         "consumer ack wait (NATS) = 120 s, stream duplicate window (NATS) = 120 s"),
        ("a batch silent longer than the ack wait", broken { s in s.longestBatchSilence = .milliseconds(31_500) },
         "longest batch silence (audit config) = 31500 ms, consumer ack wait (NATS) = 30 s"),
        ("a heartbeat of half the lease", broken { s in s.workerHeartbeat = .milliseconds(2_500) },
         "worker lease (OMS config) = 5 s, 3 × heartbeat (OMS config) = 7500 ms"),
    ])
    func violationNamesBothValues(_ case: String, _ settings: AuditFlowLiveSettings, _ values: String) {
        let violations = settings.invariants.violations
        #expect(violations.count == 1, "\(`case`): \(violations)")
        #expect(violations.first?.contains(values) == true, "\(`case`): \(violations)")
        #expect(violations.first?.hasPrefix("VIOLATED: ") == true)
    }

    @Test("the settings are read from the two services' configuration documents; a missing value is an error naming its path")
    func readsDocuments() throws {
        let oms: JSONValue = [
            "workers": ["lease_seconds": 5.0, "heartbeat_seconds": 1.0],
            "outbox_relay": ["retry_horizon_seconds": 65.0],
            "audit_stream": ["name": "AUDIT", "duplicate_window_seconds": 120.0],
        ]
        let audit: JSONValue = [
            "stream": ["duplicate_window_seconds": 120],
            "consumer": ["ack_wait_seconds": 30.0, "longest_batch_silence_seconds": 0.04],
        ]
        let read = try AuditFlowLiveSettings(oms: oms, audit: audit, streamDuplicateWindow: .seconds(120), consumerAckWait: .seconds(30))
        #expect(read == Self.sound)
        #expect(throws: ProdReadyError.self) {
            try AuditFlowLiveSettings(oms: ["workers": ["lease_seconds": 5.0]], audit: audit, streamDuplicateWindow: .seconds(120), consumerAckWait: .seconds(30))
        }
        do {
            _ = try AuditFlowLiveSettings(oms: oms, audit: ["stream": ["duplicate_window_seconds": 120]], streamDuplicateWindow: .seconds(120), consumerAckWait: .seconds(30))
            Issue.record("a document without the consumer's ack wait was accepted")
        } catch let error as ProdReadyError {
            #expect(error.message.contains("consumer.ack_wait_seconds"), "\(error)")
        }
    }
}
