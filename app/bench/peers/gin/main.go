// The peer of `cargo xtask bench app`: the design seed's Gin service (chapter 1, `r.GET("/ping")`
// with gin.Default(), so with Gin's request log and panic recovery), plus the seed's chapter 3.2
// cached read through go-redis: GET /users/:id reads the L2 entry the app wrote
// (`<prefix>:{user:ID}` = `<fresh-until-ms>|<json>`) and answers its JSON, 404 when absent.
//
// Built by the bench from Debian's packages only (golang-go, golang-github-gin-gonic-gin-dev,
// golang-gopkg-redis.v5-dev): GO111MODULE=off GOPATH=/usr/share/gocode go build.
// go-redis v5 (gopkg.in/redis.v5) is the Go Redis client Debian 12 ships; the current major
// (v9) is not packaged.
package main

import (
	"bytes"
	"flag"
	"log"
	"strconv"

	"github.com/gin-gonic/gin"
	"gopkg.in/redis.v5"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "HTTP listen address")
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis address (host:port)")
	prefix := flag.String("key-prefix", "app", "the app's cache.key_prefix")
	flag.Parse()

	rdb := redis.NewClient(&redis.Options{Addr: *redisAddr})

	r := gin.Default()
	r.GET("/ping", func(c *gin.Context) {
		c.JSON(200, gin.H{
			"message": "pong",
		})
	})
	r.GET("/users/:id", func(c *gin.Context) {
		id, err := strconv.ParseInt(c.Param("id"), 10, 64)
		if err != nil || id <= 0 {
			c.JSON(400, gin.H{"error": "id must be a positive integer", "code": "invalid_id"})
			return
		}
		val, err := rdb.Get(*prefix + ":{user:" + strconv.FormatInt(id, 10) + "}").Bytes()
		if err == redis.Nil {
			c.JSON(404, gin.H{"error": "user not found", "code": "not_found"})
			return
		}
		if err != nil {
			c.JSON(503, gin.H{"error": err.Error(), "code": "cache_unavailable"})
			return
		}
		bar := bytes.IndexByte(val, '|')
		if bar < 0 || bar == len(val)-1 {
			c.JSON(404, gin.H{"error": "user not found", "code": "not_found"})
			return
		}
		c.Data(200, "application/json", val[bar+1:])
	})
	if err := r.Run(*listen); err != nil {
		log.Fatal(err)
	}
}
