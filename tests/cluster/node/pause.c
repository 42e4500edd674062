/* The pod sandbox ("pause") container of the local test node: holds the pod's namespaces and
 * waits, as registry.k8s.io/pause does, until SIGTERM or SIGINT; reaps orphaned children when it
 * is PID 1 of a shared PID namespace. Built statically by tests/cluster/node-image.sh. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
  struct sigaction sa = {0};
  sa.sa_handler = quit;
  sigaction(SIGINT, &sa, 0);
  sigaction(SIGTERM, &sa, 0);
  sa.sa_handler = reap;
  sa.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, 0);
  for (;;) pause();
}
