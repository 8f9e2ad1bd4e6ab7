package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/invokeari/invokeari/events/natsrv"
)

// runNATSNode runs one node of a NATS cluster with JetStream, the same server a daemon
// embeds, for a machine of a cluster that runs no daemon (e.g. the third of three).
func runNATSNode(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("nats-node", flag.ContinueOnError)
	fs.SetOutput(out)
	name := fs.String("name", "", "this node's server name, unique in the cluster (required)")
	listen := fs.String("listen", "127.0.0.1:4222", "client listen address")
	storeDir := fs.String("store-dir", "./data/nats-node", "JetStream store directory")
	cluster := fs.String("cluster", "invokeari", "cluster name, the same on every node")
	clusterListen := fs.String("cluster-listen", "127.0.0.1:6222", "route listen address")
	routes := fs.String("routes", "", "comma-separated route URLs of the nodes, nats-route://host:port (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *routes == "" {
		return fmt.Errorf("nats-node: -name and -routes are required")
	}
	log := newLogger(out, LogConfig{})
	e, err := natsrv.Start(ctx, natsrv.Config{Listen: *listen, StoreDir: *storeDir, ServerName: *name, Logger: log,
		Cluster: &natsrv.ClusterConfig{Name: *cluster, Listen: *clusterListen, Routes: strings.Split(*routes, ",")}})
	if err != nil {
		return err
	}
	defer e.Shutdown()
	log.Info("NATS cluster node running", "name", *name, "url", e.ClientURL(), "cluster", *cluster, "routes", e.ClusterURL())
	<-ctx.Done()
	return nil
}
