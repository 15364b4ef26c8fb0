import OMSService
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
