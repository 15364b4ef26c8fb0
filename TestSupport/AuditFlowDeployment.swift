public import AuditContract
import Foundation
import PostgresNIO
import ProdReadyCore
public import ProdReadyInfra
import ProdReadyNATS
import ProdReadyPostgres

/// Where one audit deployment keeps its data on a shared stack: its schema, its subjects (and so its stream) and
/// its durable consumer, so deployments and tests never see each other's events.
public struct AuditIsolation: Sendable {
    public let schema: String
    public let subjects: AuditSubjects
    public let durable: String

    /// A fresh isolation for a deployment the test starts.
    public init() {
        let name = uniqueName("audit").replacingAll("-", with: "_")
        schema = name
        subjects = AuditSubjects(prefix: name + ".")
        durable = name
    }

    /// Where an external deployment keeps its data: its settings' variables, else the service's defaults.
    public init(externalDeploymentEnvironment environment: [String: String]) {
        func value(_ name: String, _ fallback: String) -> String { environment[name].flatMap { $0.isEmpty ? nil : $0 } ?? fallback }
        schema = value("AUDIT_SCHEMA", "audit")
        subjects = AuditSubjects(prefix: value("AUDIT_SUBJECT_PREFIX", ""))
        durable = value("AUDIT_DURABLE", "audit-service")
    }

    /// The settings of the relay and the audit process (the OMS's API and workers need only the subject prefix).
    public var environment: [String: String] {
        ["AUDIT_SCHEMA": schema, "AUDIT_SUBJECT_PREFIX": subjects.prefix, "AUDIT_DURABLE": durable, "OMS_AUDIT_SUBJECT_PREFIX": subjects.prefix]
    }
}

/// The whole audit flow of SPEC-audit: the OMS (API and workers), its outbox relay, and the audit service.
public struct AuditFlowDeployment: Sendable {
    /// The OMS's processes (`oms`, publisher, workers).
    public let oms: ServiceDeployment
    /// `oms-outbox-relay` and `audit`; the base URL is the audit API's.
    public let audit: ServiceDeployment
    public let omsIsolation: OMSIsolation
    public let isolation: AuditIsolation
    public let endpoints: StackEndpoints
    public var isExternal: Bool { audit.isExternal }
}

/// Runs `body` with the audit flow on the stack behind `endpoints` (the suite's shared stack unless given), or the
/// deployment of `OMS_BASE_URL` + `AUDIT_BASE_URL` when both are set. `auditEnvironment` adds settings of the
/// relay and the audit process (ack wait, batch size, crash points). Afterwards the processes stop and the
/// deployment's schemas, stream and keys are removed (never an external deployment's).
public func withAuditFlowDeployment<Result: Sendable>(
    endpoints: StackEndpoints? = nil,
    auditEnvironment: [String: String] = [:],
    _ body: (AuditFlowDeployment) async throws -> Result
) async throws -> Result {
    let environment = ProcessInfo.processInfo.environment
    func isSet(_ name: String) -> Bool { environment[name].map { !$0.isEmpty } ?? false }
    guard isSet("OMS_BASE_URL") == isSet("AUDIT_BASE_URL") else {
        throw ProdReadyError(.configuration, "the audit flow runs against an external deployment only with both OMS_BASE_URL and AUDIT_BASE_URL set; one of them is missing")
    }
    let external = isSet("AUDIT_BASE_URL")
    let endpoints = try await { () async throws -> StackEndpoints in
        if let endpoints { return endpoints }
        return try await TestInfrastructure.shared.endpoints(for: [.postgres, .kafka, .redis, .s3, .nats])
    }()
    let isolation = external ? AuditIsolation(externalDeploymentEnvironment: environment) : AuditIsolation()
    return try await withOMSDeployment(endpoints: endpoints, extraEnvironment: ["OMS_AUDIT_SUBJECT_PREFIX": isolation.subjects.prefix]) { oms, omsIsolation in
        let plan = ServiceDeploymentPlan(
            service: "audit", baseURLVariable: "AUDIT_BASE_URL", processes: ["oms-outbox-relay", "audit"], apiProcess: "audit",
            environment: omsIsolation.environment.merging(isolation.environment) { $1 }.merging(auditEnvironment) { $1 })
        return try await runThenCleanUp({
            try await withServiceDeployment(plan, endpoints: endpoints) { audit in
                try await body(AuditFlowDeployment(oms: oms, audit: audit, omsIsolation: omsIsolation, isolation: isolation, endpoints: endpoints))
            }
        }, cleanUp: {
            guard !external else { return }
            if let url = endpoints.postgresURL {
                try await withPostgresClient(url) { client in
                    _ = try await client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(isolation.schema)\" CASCADE"))
                }
            }
            if let url = endpoints.natsURL {
                let nats = try await NATSConnection(url: url)
                try await nats.deleteStream(isolation.subjects.streamName)
            }
        })
    }
}
