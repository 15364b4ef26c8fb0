import ProdReadyCore
import ProdReadyService
public import Testing

/// Polls an OMS command's status until it is COMPLETED or FAILED; returns its `data`.
public func finishedCommand(_ client: ServiceClient, _ commandID: String, timeout: Duration = .seconds(60)) async throws -> JSONValue {
    try await eventually("command \(commandID) to finish", timeout: timeout, interval: .milliseconds(100)) {
        let answer = try await client.get("/api/v1/commands/\(commandID)/status")
        guard answer.status == 200, let data = answer.data, let status = data["status"]?.stringValue else { return .pending("\(answer)") }
        return status == "COMPLETED" || status == "FAILED" ? .done(data) : .pending("status \(status)")
    }
}

/// Sends an OMS command and waits until it completed; returns the 202's `data`.
@discardableResult
public func completed(_ client: ServiceClient, _ method: String, _ path: String, _ body: JSONValue? = nil, sourceLocation: SourceLocation = #_sourceLocation) async throws -> JSONValue {
    let answer = try await client.request(method, path, json: body)
    try #require(answer.status == 202, "\(method) \(path) → \(answer)", sourceLocation: sourceLocation)
    let data = try #require(answer.data)
    let status = try await finishedCommand(client, try #require(data["command_id"]?.stringValue))
    #expect(status["status"] == "COMPLETED", "\(method) \(path): \(status.text)", sourceLocation: sourceLocation)
    return data
}
