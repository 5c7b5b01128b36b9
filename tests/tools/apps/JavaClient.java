import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpConnectTimeoutException;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

/**
 * java.net.http.HttpClient with connectTimeout(1 s), for tests/src/apps.rs: `JavaClient get URL`
 * prints one JSON line with the response status or the exception, the time it took and its
 * pid. On the timeout the client's selector thread deregisters the channel and closes its fd
 * (close). The JDK connects IPv4 addresses through an IPv6 socket (::ffff:a.b.c.d).
 */
public class JavaClient {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(1)).build();
        HttpRequest req = HttpRequest.newBuilder(URI.create(args[1])).GET().build();
        long start = System.nanoTime();
        String outcome;
        try {
            HttpResponse<String> resp = client.send(req, HttpResponse.BodyHandlers.ofString());
            outcome = "\"status\":" + resp.statusCode();
        } catch (HttpConnectTimeoutException e) {
            outcome = "\"exception\":\"" + e.getClass().getSimpleName() + "\"";
        }
        double elapsed = (System.nanoTime() - start) / 1e9;
        long pid = ProcessHandle.current().pid();
        System.out.println("{" + outcome + ",\"elapsed\":" + elapsed + ",\"pid\":" + pid + "}");
    }
}
