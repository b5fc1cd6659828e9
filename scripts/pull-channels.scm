;; What `guix pull ARGS...` would pull, the way guix pull reads it (channels
;; file, then --url/--commit/--branch applied to the guix channel), and what
;; the profile's current generation came from. Tab-separated lines:
;;   file    CHANNELS-FILE (or "built-in default channels")
;;   want    NAME URL BRANCH COMMIT CHECKOUT-DIRECTORY
;;   current NAME URL BRANCH COMMIT
;; Options guix pull does not use for that are ignored.
(use-modules (guix channels) (guix git) (guix ui) (guix profiles) (guix utils)
             (ice-9 match) (srfi srfi-1) (srfi srfi-26))

(define (parse args opts)
  (define (value arg prefix)
    (and (string-prefix? prefix arg) (substring arg (string-length prefix))))
  (match args
    (() opts)
    (((or "-C" "--channels") file . rest) (parse rest (acons 'file file opts)))
    (((or "-p" "--profile") p . rest) (parse rest (acons 'profile p opts)))
    (((or "-q" "--no-channel-files") . rest) (parse rest (acons 'no-files #t opts)))
    ((arg . rest)
     (parse rest
            (cond ((value arg "--channels=") => (cut acons 'file <> opts))
                  ((value arg "--profile=") => (cut acons 'profile <> opts))
                  ((value arg "--url=") => (cut acons 'url <> opts))
                  ((value arg "--commit=") => (lambda (c) (acons 'ref `(commit . ,c) opts)))
                  ((value arg "--branch=") => (lambda (b) (acons 'ref `(branch . ,b) opts)))
                  (else opts))))))

(define opts (parse (cdr (command-line)) '()))

(define (load-channels file)
  (let ((result (load* file (make-user-module '((guix channels))))))
    (if (and (list? result) (every channel? result))
        result
        (leave (G_ "'~a' did not return a list of channels~%") file))))

(define default-file (string-append (config-directory #:ensure? #f) "/channels.scm"))

(define file
  (cond ((assq-ref opts 'file) => identity)
        ((and (not (assq-ref opts 'no-files)) (file-exists? default-file))
         default-file)
        (else #f)))

(define channels
  (let ((listed (if file (load-channels file) %default-channels))
        (url (assq-ref opts 'url))
        (ref (assq-ref opts 'ref)))
    (map (lambda (c)
           (if (and (guix-channel? c) (or url ref))
               (let ((c (channel (inherit c) (url (or url (channel-url c))))))
                 (match ref
                   (('commit . commit) (channel (inherit c) (commit commit) (branch #f)))
                   (('branch . branch) (channel (inherit c) (commit #f) (branch branch)))
                   (#f c)))
               c))
         listed)))

(define (show tag channel . rest)
  (display (string-join (cons* tag (symbol->string (channel-name channel))
                               (channel-url channel)
                               (or (channel-branch channel) "")
                               (or (channel-commit channel) "")
                               rest)
                        "\t"))
  (newline))

(format #t "file\t~a~%" (or file "built-in default channels"))
(for-each (lambda (c) (show "want" c (url-cache-directory (channel-url c)))) channels)
(for-each (cut show "current" <>)
          (profile-channels (or (assq-ref opts 'profile)
                                (string-append %profile-directory "/current-guix"))))
