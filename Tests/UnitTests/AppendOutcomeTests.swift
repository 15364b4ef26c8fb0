import OMSService
import ProdReadyInfra
import ProdReadyS3
import ProdReadyCore
import Testing

@Suite("Which failed appends may still have stored the command, no servers")
struct AppendOutcomeTests {
    @Test("an event stored in the log without its index entry is an unknown outcome (never a refusal); a refused connection or an error answer is a refusal; a timeout is unknown")
    func classification() {
        let refused = ProdReadyError(.connectionFailed, "connect: Connection refused (errno 111)", retriable: true)
        #expect(OMSAPI.appendOutcomeUnknown(StoredWithoutIndex(key: "events/db/00000000000000000007-x.json", eventID: "x", cause: refused)))
        #expect(!OMSAPI.appendOutcomeUnknown(refused))
        #expect(!OMSAPI.appendOutcomeUnknown(ProdReadyError(.serverError, "S3 answered 500")))
        #expect(OMSAPI.appendOutcomeUnknown(ProdReadyError(.timeout, "no answer within 3 s", retriable: true)))
        #expect(OMSAPI.appendOutcomeUnknown(ProdReadyError(.connectionFailed, "connection reset by peer", retriable: true)))
    }
}

/// A real request to a loopback port nothing listens on: the S3 client must report the refusal at once, in words
/// the API classifies as a refusal. `HTTPClient.shared` retried the connection until the request's deadline, so a
/// stopped S3 cost the OMS API its whole S3 timeout on every request.
@Suite("A refused S3 connection fails at once and reads as a refusal, real socket, no server")
struct RefusedConnectionTests {
    @Test("a PUT to a closed port fails with connection_failed long before the client's 30 s deadline, and the API would answer it as a refusal")
    func refusedAtOnce() async throws {
        let port = try LoopbackPort.free()
        let s3 = S3Client(configuration: try S3Configuration(endpoint: "http://127.0.0.1:\(port)", accessKey: "a", secretKey: "b", region: "us-east-1"), timeout: .seconds(30))
        let clock = ContinuousClock()
        let started = clock.now
        let error = await #expect(throws: ProdReadyError.self) {
            _ = try await s3.putObject(bucket: "refused", key: "k", body: Array("x".utf8), condition: .ifAbsent, contentType: "text/plain")
        }
        let elapsed = clock.now - started
        #expect(error?.code == .connectionFailed, "\(String(describing: error))")
        #expect(elapsed < .seconds(10), "a refused connection took \(elapsed) to fail: the client waited for its deadline instead of failing at once")
        if let error { #expect(!OMSAPI.appendOutcomeUnknown(error), "a refused connection must read as a refusal (nothing sent): \(error)") }
    }
}
