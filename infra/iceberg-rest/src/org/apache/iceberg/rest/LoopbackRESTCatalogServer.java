/*
 * The local route's Iceberg REST catalog: Apache Iceberg's RESTCatalogServer (the program of
 * the apache/iceberg-rest-fixture image) with its HTTP connector bound to one address.
 *
 * RESTCatalogServer listens on every interface (new Server(port)) and has no option to
 * change that; on a learner's laptop the catalog must answer on loopback only. So this
 * builds the same catalog the same way (its own initializeBackendCatalog: CATALOG_*
 * environment variables, the JDBC default) and serves it through the same servlet and
 * adapter, on rest.host (CATALOG_REST_HOST, default 127.0.0.1) and rest.port
 * (CATALOG_REST_PORT, default 8181). It sits in the fixture's package because the adapter
 * and the catalog context are package-private there; compiled against Iceberg 1.10.1
 * (infra/iceberg-rest/pom.xml), so a version bump that changes them fails at build time.
 */
package org.apache.iceberg.rest;

import java.lang.reflect.Method;
import java.util.Map;
import org.apache.iceberg.util.PropertyUtil;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.server.handler.gzip.GzipHandler;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;

public final class LoopbackRESTCatalogServer {
  private LoopbackRESTCatalogServer() {}

  public static void main(String[] args) throws Exception {
    Method init = RESTCatalogServer.class.getDeclaredMethod("initializeBackendCatalog");
    init.setAccessible(true);
    RESTCatalogServer.CatalogContext context =
        (RESTCatalogServer.CatalogContext) init.invoke(new RESTCatalogServer());
    Map<String, String> conf = context.configuration();

    ServletContextHandler handler = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
    handler.addServlet(
        new ServletHolder(new RESTCatalogServlet(new RESTServerCatalogAdapter(context))), "/*");
    handler.insertHandler(new GzipHandler());

    Server http = new Server();
    ServerConnector connector = new ServerConnector(http);
    connector.setHost(PropertyUtil.propertyAsString(conf, "rest.host", "127.0.0.1"));
    connector.setPort(PropertyUtil.propertyAsInt(conf, RESTCatalogServer.REST_PORT, 8181));
    http.addConnector(connector);
    http.setHandler(handler);
    http.start();
    http.join();
  }
}
