import Testing
import ProdReadyS3

/// Vectors from the AWS S3 documentation's SigV4 header-signing examples (key AKIAIOSFODNN7EXAMPLE,
/// 2013-05-24T00:00:00Z, us-east-1, bucket examplebucket).
@Suite("SigV4 signing")
struct SigV4Tests {
    let signer = SigV4Signer(accessKey: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region: "us-east-1")
    let date = 1_369_353_600
    let emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    func authorization(method: String = "GET", path: String, query: [(String, String)] = [], headers: [(String, String)]) -> String {
        let result = signer.signatureHeaders(method: method, path: path, query: query, headers: headers, payloadHash: emptyHash, date: date)
        return result.first { $0.0 == "Authorization" }!.1
    }

    @Test("GET object with a Range header")
    func getObject() {
        let value = authorization(path: "/test.txt", headers: [("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9")])
        #expect(value == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    @Test("GET bucket lifecycle: a query parameter without a value")
    func getLifecycle() {
        let value = authorization(path: "/", query: [("lifecycle", "")], headers: [("Host", "examplebucket.s3.amazonaws.com")])
        #expect(value.hasSuffix("Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"))
    }

    @Test("List objects: query parameters are sorted and encoded")
    func listObjects() {
        let value = authorization(path: "/", query: [("prefix", "J"), ("max-keys", "2")], headers: [("Host", "examplebucket.s3.amazonaws.com")])
        #expect(value.hasSuffix("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"))
    }

    @Test("URI encoding keeps unreserved characters and encodes the rest")
    func uriEncoding() {
        #expect(SigV4Signer.uriEncode("a b/c~d_e.f-g", keepSlash: true) == "a%20b/c~d_e.f-g")
        #expect(SigV4Signer.uriEncode("a/b") == "a%2Fb")
        #expect(SigV4Signer.uriEncode("é") == "%C3%A9")
    }

    @Test("Configuration rejects malformed endpoints and empty keys")
    func configurationValidation() {
        #expect(throws: (any Error).self) { try S3Configuration(endpoint: "127.0.0.1:9000", accessKey: "a", secretKey: "b") }
        #expect(throws: (any Error).self) { try S3Configuration(endpoint: "http://host:9000/path", accessKey: "a", secretKey: "b") }
        #expect(throws: (any Error).self) { try S3Configuration(endpoint: "http://host:9000", accessKey: "", secretKey: "b") }
        #expect((try? S3Configuration(endpoint: "http://host:9000/", accessKey: "a", secretKey: "b"))?.endpoint == "http://host:9000")
    }
}
